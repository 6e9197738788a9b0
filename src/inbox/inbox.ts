/**
 * A session's inbox, and the mesh's definition of "surfaced exactly once":
 *
 *   1. the host takes the session's pending messages, in stream order (`take`);
 *   2. it shows them to the model;
 *   3. it confirms (`batch.confirm()`): the mesh appends the shown envelope ids to the session's
 *      surfaced-id log (a stream write the server acknowledges), then sends one confirmed ack.
 *
 * A message whose id is already in the log is acknowledged without being shown. So a crash before
 * step 3 shows the message again next time (it was never confirmed), and a crash between the log
 * write and the ack does not. Dedup never relies on the publish duplicate window.
 *
 * Only one reader holds a session at a time (a lease): overlapping runs neither split nor double a
 * session's messages. While a batch is held, its ack deadline is extended, so a long turn causes no
 * redelivery. The verb is `take`, not `drain`: the client's `drain()` closes a connection.
 */
import type { JsMsg, Consumer } from "@nats-io/jetstream";
import type { SessionAddress } from "../address/index.js";
import { sessionKeyOf } from "../address/index.js";
import { InboxStateError, MeshError, describe } from "../errors.js";
import type { MeshContext } from "../mesh-context.js";
import { Kinds, ReservedIds, decodeEnvelope, type Envelope, type WireAddress } from "../wire/index.js";
import { receivedReply } from "../handoff/index.js";
import { isNotFound } from "../transport/js-errors.js";
import { SessionLease, type AcquireOptions } from "./lease.js";
import { SeenLog, SeenLogRefusedError, surfacingKey } from "./seen-log.js";
import { park, type ParkReason } from "./parked.js";
import { ensureSessionConsumer, MAX_BATCH } from "./session-consumer.js";

export interface InboxMessage {
  /** Envelope id: stable across retries and redeliveries. */
  readonly id: string;
  readonly kind: string;
  readonly from: WireAddress;
  readonly to: WireAddress;
  readonly body: Envelope["body"];
  readonly sentAt: string;
  readonly correlationId?: string;
  readonly taskId?: string;
  /** Inbox stream sequence. */
  readonly seq: number;
  readonly envelope: Envelope;
}

export interface InboxBatch {
  readonly messages: readonly InboxMessage[];
  /**
   * True when the server reported more messages pending behind this batch: take again (after
   * confirming) before waiting for new arrivals. A loop that empties an inbox ends on `more`, not
   * on the first empty batch.
   */
  readonly more: boolean;
  /** Record that the model was shown these messages, then acknowledge them. Idempotent. */
  confirm(): Promise<void>;
  /** Give the messages back unshown (they are offered again; after maxDeliveries they are parked). */
  release(): Promise<void>;
}

export interface InboxOptions extends AcquireOptions {
  /** Instrumentation: runs after the surfacing keys (`<sending instance>/<envelope id>`) are recorded and before the ack is sent. */
  readonly onRecorded?: (ids: readonly string[]) => void | Promise<void>;
}

export interface TakeOptions {
  /** Most messages to return (1-1000, default 100). */
  readonly max?: number;
}

/**
 * What a take does with one fetched message: show it; skip it (already surfaced); record it as
 * surfaced without showing it (`silent`: a reply or completion whose action is `skip`, so the
 * model is told nothing); or park it.
 */
type Verdict = { readonly show: InboxMessage; readonly key: string } | { readonly skip: true } | { readonly silent: string } | { readonly park: ParkReason; readonly detail: string };

/** An inbox subject as `judge` needs it: its parts, and whether it is this session's inbox (undefined: not an inbox subject). */
type SubjectVerdict = { readonly fromInstance: string; readonly kind: string; readonly mine: boolean } | undefined;

/** What a take decided so far about the messages of one fetch. */
interface Judging {
  readonly shown: InboxMessage[];
  readonly silent: string[];
  /** Surfacing keys of everything the batch records: shown and silent. */
  readonly ids: Set<string>;
  /** The first failure (a park that could not be written): the fetch is given back whole. */
  failure: { readonly err: unknown } | undefined;
}

/** Distinct subjects remembered per reader (a session sees few: one per sending instance and kind). */
const SUBJECT_CACHE = 256;

export class Inbox {
  private outstanding: HeldBatch | undefined;
  private closed = false;
  /** take() and claim() run one at a time, so a message is never both taken and claimed. */
  private turn: Promise<unknown> = Promise.resolve();
  /** Messages the server said were pending after the last fetch (0: unknown, ask). */
  private knownPending = 0;
  /**
   * Set while this reader knows it has fetched everything up to this stream sequence and nothing
   * was pending behind it: the session's live watcher then counts what lands after it
   * (`arrivals`), and a take that has that count fetches at once instead of first asking the
   * server what is deliverable.
   */
  private drainedThrough: number | undefined;
  private readonly arrivals = new Set<number>();
  /** The last confirm failed because the seen log refused its record (redeliveries are ours, not the messages'). */
  private seenRefused = false;
  /**
   * The confirmation of the last batch's ack, still on its way (never rejects). A take that goes
   * on fetching (the server said more is pending) sends its pull right behind the ack instead of
   * waiting a round trip for it; a take that must ask the server what is deliverable, and close,
   * wait for it first.
   */
  private acking: Promise<void> | undefined;
  /** Parsed inbox subjects: every message of a batch usually shares one. */
  private readonly subjects = new Map<string, SubjectVerdict>();

  private constructor(
    private readonly ctx: MeshContext,
    readonly session: SessionAddress,
    private readonly lease: SessionLease,
    private readonly seen: SeenLog,
    private consumer: Consumer,
    private readonly opts: InboxOptions,
  ) {}

  static async open(ctx: MeshContext, session: SessionAddress, opts: InboxOptions = {}): Promise<Inbox> {
    const lease = await SessionLease.acquire(ctx, session, opts);
    try {
      // Loading the log fences it: a previous holder can record nothing more.
      const seen = await SeenLog.open(ctx, session);
      const consumer = await ensureSessionConsumer(ctx, session, seen.through, lease.tookOver);
      return new Inbox(ctx, session, lease, seen, consumer, opts);
    } catch (err) {
      await lease.release();
      throw err;
    }
  }

  /** The lease holder id of this reader (what liveness probes ask for). */
  get holder(): string {
    return this.lease.holder;
  }

  get isOpen(): boolean {
    return !this.closed;
  }

  get sessionKey(): string {
    return sessionKeyOf(this.session);
  }

  /** Pending messages, oldest first; an empty batch when nothing is pending. */
  take(opts: TakeOptions = {}): Promise<InboxBatch> {
    return this.exclusive(() => this.takeNow(opts));
  }

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.turn.then(fn, fn);
    this.turn = run.catch(() => undefined);
    return run;
  }

  private async takeNow(opts: TakeOptions): Promise<InboxBatch> {
    if (this.closed) throw new InboxStateError(`inbox of ${this.sessionKey} is closed`);
    if (this.outstanding) throw new InboxStateError("confirm or release the previous batch before taking again");
    const max = opts.max ?? 100;
    if (!Number.isInteger(max) || max < 1 || max > MAX_BATCH) throw new InboxStateError(`max must be an integer from 1 to ${MAX_BATCH}`);
    await this.lease.ensureHeld();
    for (;;) {
      if (this.knownPending === 0) await this.ackConfirmed();
      // Each message is judged as it arrives, while the server is still sending the rest.
      const j: Judging = { shown: [], silent: [], ids: new Set(), failure: undefined };
      const fetched = await this.fetchPending(max, (m) => this.judgeInto(m, j));
      if (fetched.length === 0) return emptyBatch;
      try {
        if (j.failure) throw j.failure.err;
        const { shown, silent, ids } = j;
        if (shown.length > 0) {
          this.outstanding = new HeldBatch(this, shown, ids, fetched, this.knownPending > 0, this.ctx.config.inbox.ackWaitMs);
          return this.outstanding;
        }
        // Everything fetched was parked, already shown or silent: record the silent ones, settle, look further.
        await this.settle(fetched, silent);
      } catch (err) {
        // Fetched but not handed out (a park or the seen log refused): give every message back,
        // so no later acknowledgement (ack policy all) can cover one that was never shown.
        this.giveBack(fetched);
        if (err instanceof MeshError) throw err;
        throw new MeshError("take_failed", `could not take the inbox of ${this.sessionKey} (${describe(err)}); nothing was acknowledged, the messages will be offered again`, { cause: err });
      }
    }
  }

  /** Judge one fetched message into `j`; never throws (a failure is kept in `j` and ends the judging). */
  private judgeInto(m: JsMsg, j: Judging): Promise<void> | undefined {
    if (j.failure) return undefined;
    try {
      const v = this.judge(m, j.ids);
      if ("show" in v) {
        j.shown.push(v.show);
        j.ids.add(v.key);
      } else if ("silent" in v) {
        j.silent.push(v.silent);
        j.ids.add(v.silent);
      } else if ("park" in v) {
        return park(this.ctx, this.session, m, v.park, v.detail).catch((err: unknown) => {
          j.failure ??= { err };
        });
      }
    } catch (err) {
      j.failure = { err };
    }
    return undefined;
  }

  private giveBack(fetched: readonly JsMsg[]): void {
    this.forgetPending();
    for (const m of fetched) m.nak();
  }

  /**
   * Record `id` as surfaced through another path (an inline reply, an await result) so the inbox
   * never shows it. Returns false, recording nothing, when it was already surfaced or an outstanding
   * batch holds it (that batch surfaces it). Never both, never neither.
   */
  claim(fromInstance: string, id: string): Promise<boolean> {
    return this.exclusive(async () => {
      if (this.closed) throw new InboxStateError(`inbox of ${this.sessionKey} is closed`);
      if (this.seen.has(fromInstance, id) || this.outstanding?.holds(fromInstance, id)) return false;
      await this.lease.ensureHeld();
      await this.seen.append([surfacingKey(fromInstance, id)], undefined);
      return true;
    });
  }

  /** True when envelope `id` from `fromInstance` was already surfaced (shown by the inbox or claimed). */
  surfaced(fromInstance: string, id: string): boolean {
    return this.seen.has(fromInstance, id);
  }

  /** Release any held batch and the lease. The session's messages stay stored for the next reader. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.outstanding) await this.outstanding.release();
    await this.ackConfirmed();
    await this.lease.release();
  }

  /** @internal Confirm a held batch: one at a time with takes and claims, so appends stay in order. */
  confirmBatch(held: readonly JsMsg[], ids: readonly string[]): Promise<void> {
    return this.exclusive(() => this.settle(held, ids));
  }

  private async settle(held: readonly JsMsg[], ids: readonly string[]): Promise<void> {
    const last = held.at(-1);
    if (last === undefined) return;
    await this.lease.ensureHeld();
    try {
      await this.seen.append(ids, last.seq);
      this.seenRefused = false;
    } catch (err) {
      // Our own refused record is no fault of the messages: they must not drift toward parking.
      if (err instanceof SeenLogRefusedError) this.seenRefused = true;
      throw err;
    }
    await this.opts.onRecorded?.(ids);
    // Recorded: the ack may go. Its confirmation is awaited by whatever next needs it (above).
    this.acking = last.ackAck().then(
      (confirmed) => {
        if (!confirmed) this.ackNotConfirmed(last.seq, undefined);
      },
      (err: unknown) => this.ackNotConfirmed(last.seq, err),
    );
  }

  private ackNotConfirmed(seq: number, err: unknown): void {
    // The batch may come back after its ack deadline; its messages are recorded, so it is skipped.
    this.forgetPending();
    this.ctx.logger.warn({ err, session: this.sessionKey, seq }, "ack not confirmed; already-recorded messages will be skipped on redelivery");
  }

  private async ackConfirmed(): Promise<void> {
    const acking = this.acking;
    this.acking = undefined;
    await acking;
  }

  /** @internal Messages given back change what is pending: ask the server next time. */
  forgetPending(): void {
    this.knownPending = 0;
    this.drainedThrough = undefined;
    this.arrivals.clear();
  }

  /** @internal The session's live watcher saw a message for this session stored at `seq`. */
  noteArrival(seq: number): void {
    if (this.drainedThrough !== undefined && seq > this.drainedThrough && this.arrivals.size < MAX_BATCH) this.arrivals.add(seq);
  }

  /** After a fetch: what is known to be pending behind it, and whether the reader is now drained. */
  private fetched(out: readonly JsMsg[]): void {
    const last = out.at(-1);
    this.knownPending = last?.info.pending ?? 0;
    if (last === undefined || this.knownPending > 0) {
      this.drainedThrough = undefined;
      this.arrivals.clear();
      return;
    }
    const through = Math.max(this.drainedThrough ?? 0, ...out.map((m) => m.seq));
    this.drainedThrough = through;
    for (const seq of this.arrivals) if (seq <= through) this.arrivals.delete(seq);
  }

  /** @internal */
  finished(batch: HeldBatch): void {
    if (this.outstanding === batch) this.outstanding = undefined;
  }

  private async fetchPending(max: number, onMessage: (m: JsMsg) => Promise<void> | undefined): Promise<JsMsg[]> {
    try {
      return await this.fetchFrom(this.consumer, max, onMessage);
    } catch (err) {
      if (!isNotFound(err)) throw err;
      // Reaped while this reader was idle: recreate from the durable record and carry on.
      this.consumer = await ensureSessionConsumer(this.ctx, this.session, this.seen.through, false);
      return this.fetchFrom(this.consumer, max, onMessage);
    }
  }

  /**
   * Fetch up to `max` deliverable messages. Never comes back empty while something deliverable is
   * stored: the consumer's pending count can lag a publish the stream has already acknowledged,
   * and a pull can expire before a loaded server delivers, so an empty pull is asked again (within
   * a bounded time) while the stream holds messages the consumer has not delivered. `onMessage`
   * sees each message as it arrives and never throws.
   */
  private async fetchFrom(consumer: Consumer, max: number, onMessage: (m: JsMsg) => Promise<void> | undefined): Promise<JsMsg[]> {
    const deadline = Date.now() + 3 * this.ctx.config.inbox.fetchExpiresMs;
    for (;;) {
      // The last fetched message says how many more were pending behind it: while that is known to
      // be non-zero, skip asking the server.
      // Else what the watcher saw land since the reader drained (a lower bound), else ask the server.
      const available = this.knownPending > 0 ? this.knownPending : this.arrivals.size > 0 ? this.arrivals.size : await this.deliverable(consumer);
      if (available === 0) return [];
      const out: JsMsg[] = [];
      const iter = await consumer.fetch({ max_messages: Math.min(available, max), expires: this.ctx.config.inbox.fetchExpiresMs });
      try {
        for await (const m of iter) {
          out.push(m);
          const judging = onMessage(m);
          if (judging) await judging;
        }
      } catch (err) {
        this.giveBack(out);
        throw err;
      }
      this.fetched(out);
      if (out.length > 0 || Date.now() >= deadline) return out;
    }
  }

  /** How many messages the consumer can deliver now (a lower bound; 0 only when there are none). */
  private async deliverable(consumer: Consumer): Promise<number> {
    const info = await consumer.info(false);
    // With one reader and no batch held, unacknowledged messages are ones given back (released
    // or timed out): they are due for redelivery, so they count as available.
    const counted = info.num_pending + info.num_ack_pending;
    if (counted > 0) return counted;
    const last = await this.ctx.jsm.direct.getMessage(this.ctx.names.inboxStream(this.session.instance), { last_by_subj: this.ctx.names.sessionFilter(this.session) });
    if (last !== null && last.seq > info.delivered.stream_seq) return 1;
    // Nothing is deliverable: everything up to the consumer's delivered sequence was handled.
    if (this.drainedThrough === undefined) this.drainedThrough = info.delivered.stream_seq;
    return 0;
  }

  private subjectOf(raw: string): SubjectVerdict {
    if (this.subjects.has(raw)) return this.subjects.get(raw);
    const subject = this.ctx.names.parseInboxSubject(raw);
    const s = this.session;
    const v: SubjectVerdict = subject && {
      fromInstance: subject.fromInstance,
      kind: subject.kind,
      mine: subject.toInstance === s.instance && subject.agent === s.agent && subject.channel === s.channel && subject.session === s.session,
    };
    if (this.subjects.size >= SUBJECT_CACHE) this.subjects.clear();
    this.subjects.set(raw, v);
    return v;
  }

  private judge(m: JsMsg, batchIds: ReadonlySet<string>): Verdict {
    const maxDeliveries = this.ctx.config.inbox.maxDeliveries;
    if (m.info.deliveryCount > maxDeliveries && !this.seenRefused) {
      return { park: "max_deliveries", detail: `delivered ${m.info.deliveryCount} times without being confirmed (limit ${maxDeliveries})` };
    }
    const decoded = decodeEnvelope(m.data, this.ctx.messageLimit);
    if (!decoded.ok) return { park: decoded.error.code, detail: decoded.error.detail };
    const env = decoded.envelope;
    const subject = this.subjectOf(m.subject);
    const s = this.session;
    if (!subject?.mine) {
      return { park: "bad_subject", detail: `subject ${m.subject} is not this session's inbox` };
    }
    if (env.from.instance !== subject.fromInstance) {
      return { park: "sender_mismatch", detail: `envelope says instance '${env.from.instance}', subject says '${subject.fromInstance}'` };
    }
    if (env.to.instance !== s.instance || env.to.agent !== s.agent || env.to.channel !== s.channel || env.to.session !== s.session) {
      return { park: "recipient_mismatch", detail: "envelope is addressed to another session than its subject" };
    }
    if (env.kind !== subject.kind) return { park: "kind_mismatch", detail: `envelope kind '${env.kind}', subject kind '${subject.kind}'` };
    const reservedFor = ReservedIds.kindOf(env.id);
    if (reservedFor !== undefined && reservedFor !== env.kind) {
      return { park: "reserved_id", detail: `id '${env.id}' is reserved for ${reservedFor} messages, not ${env.kind}` };
    }
    const key = surfacingKey(subject.fromInstance, env.id);
    if (this.seen.hasKey(key, env.id) || batchIds.has(key)) return { skip: true };
    if (isSilentHandoff(env)) return { silent: key };
    return {
      key,
      show: {
        id: env.id,
        kind: env.kind,
        from: env.from,
        to: env.to,
        // A reply's text as the one handoff rule leaves it (a sender that predates actions may still hold tokens).
        body: env.kind === Kinds.reply ? receivedReply(env.body, env.action).body : env.body,
        sentAt: env.sentAt,
        ...(env.correlationId !== undefined && { correlationId: env.correlationId }),
        ...(env.taskId !== undefined && { taskId: env.taskId }),
        seq: m.seq,
        envelope: env,
      },
    };
  }
}

class HeldBatch implements InboxBatch {
  private done = false;
  private readonly keepAlive: NodeJS.Timeout;

  constructor(
    private readonly inbox: Inbox,
    readonly messages: readonly InboxMessage[],
    /** Surfacing keys of the batch: its messages and those taken silently with it (skips: recorded, never shown). */
    private readonly keys: ReadonlySet<string>,
    private readonly held: readonly JsMsg[],
    readonly more: boolean,
    ackWaitMs: number,
  ) {
    // A model turn can take minutes: keep pushing the ack deadline out while the batch is held.
    const every = Math.max(Math.floor(ackWaitMs / 3), 200);
    this.keepAlive = setInterval(() => {
      for (const m of this.held) m.working();
    }, every);
    this.keepAlive.unref();
  }

  holds(fromInstance: string, id: string): boolean {
    return this.keys.has(surfacingKey(fromInstance, id));
  }

  async confirm(): Promise<void> {
    if (this.done) return;
    try {
      await this.inbox.confirmBatch(this.held, [...this.keys]);
    } catch (err) {
      // Nothing was recorded or acknowledged: give the messages back so they are offered again.
      await this.release();
      if (err instanceof MeshError) throw err;
      throw new MeshError("confirm_failed", `could not record surfacing (${String(err)}); the messages will be offered again`, { cause: err });
    }
    this.finish();
  }

  async release(): Promise<void> {
    if (this.done) return;
    this.inbox.forgetPending();
    for (const m of this.held) m.nak();
    this.finish();
  }

  private finish(): void {
    this.done = true;
    clearInterval(this.keepAlive);
    this.inbox.finished(this);
  }
}

/** A reply or completion whose action is `skip` (its sender's, or what a legacy reply's text says): nobody is told. */
export function isSilentHandoff(env: Envelope): boolean {
  if (env.kind === Kinds.taskComplete) return env.action === "skip";
  if (env.kind === Kinds.reply) return receivedReply(env.body, env.action).action === "skip";
  return false;
}

const emptyBatch: InboxBatch = Object.freeze({
  messages: [],
  more: false,
  confirm: async () => {},
  release: async () => {},
});
