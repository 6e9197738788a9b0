/**
 * A session's surfaced-id log: the mesh's dedup truth. A message whose envelope id is in it is
 * acknowledged without being shown again, however it came back (redelivery after a crash, a
 * publish retried after the server's duplicate window, a consumer recreated after being reaped).
 *
 * It lives on the session's subject of the instance's seen stream, and it does three jobs:
 *
 * - **Fencing.** Every write is conditional on the last record this holder knows
 *   (`Nats-Expected-Last-Subject-Sequence`). A reader that opens a session writes a record first
 *   (its fence), so whatever the previous holder still tries to record (say after a partition
 *   heals) is refused by the server: that holder gets LeaseLostError and never acknowledges.
 * - **Compaction.** A snapshot holds the whole state; once it is stored, every earlier record of the
 *   session is removed (by the rollup of a one-record snapshot, or by a purge after the last part
 *   of a longer one, which is appended without replacing anything until it is complete); after
 *   `MAX_DELTAS` deltas the next write is a snapshot again. Opening reads the last complete
 *   snapshot and the records after it (direct gets, no consumer): bounded by what the log must
 *   still hold (the ids the inbox's retention can still redeliver), not by its history.
 * - **Retention.** An id is kept while the inbox can still hold a copy of its message (the inbox's
 *   `max_age` plus the duplicate window); older ids are pruned at the next snapshot.
 */
import { randomBytes } from "node:crypto";
import type { StoredMsg } from "@nats-io/jetstream";
import { headers } from "@nats-io/transport-node";
import { sessionKeyOf, type SessionAddress } from "../address/index.js";
import { LeaseLostError, MeshError } from "../errors.js";
import type { MeshContext } from "../mesh-context.js";
import { ApiCodes, apiCode, isBusUnreachable, isRevisionConflict } from "../transport/js-errors.js";
import { isPlainSeenRecord, SeenRecordSchema, type SeenGroup } from "../wire/index.js";

/** Deltas after which the next write is a snapshot (bounds what opening a session reads). */
export const MAX_DELTAS = 64;
/**
 * Deltas above which opening compacts (its fence is a snapshot), so the next open reads few
 * records; unless the deltas hold fewer than a quarter as many ids as the snapshot: rewriting a
 * long history (100k ids: about 4 MB) costs far more than reading up to MAX_DELTAS small records,
 * and the MAX_DELTAS-th write compacts anyway.
 */
const OPEN_COMPACT_DELTAS = 8;
/** Attempts to fence at open while a previous holder's last writes are still landing. */
const FENCE_ATTEMPTS = 8;

/** The seen stream refused a record (it is full): nothing was recorded, nothing is acknowledged. */
export class SeenLogRefusedError extends MeshError {
  constructor(session: string, detail: string) {
    super("seen_log_refused", `the surfaced-id log of ${session} refused a record (${detail}); nothing was confirmed and the messages will be offered again. Raise retention.seenMaxMessages or free the seen stream.`);
  }
}

const decoder = new TextDecoder();

/**
 * What the log records for one surfaced envelope: the sending instance (the broker-checked token of
 * the inbox subject it arrived on) and its id. Another instance reusing an id never shadows it.
 */
export function surfacingKey(fromInstance: string, id: string): string {
  return `${fromInstance}/${id}`;
}

/** A read-only view of a session's surfaced-id log. */
export interface SeenView {
  /** Highest inbox stream sequence fully handled. */
  readonly through: number;
  /** Was envelope `id` from instance `fromInstance` surfaced? */
  has(fromInstance: string, id: string): boolean;
  readonly size: number;
}

export class SeenLog {
  /** Surfacing key (or a bare id, in records from before keys named the sender) -> when it was surfaced (epoch ms). */
  private ids = new Map<string, number>();
  /** Whether any bare id was loaded: only then is a bare id worth looking up (an envelope id never holds `/`, a key always does). */
  private bareIds = false;
  /** Highest inbox stream sequence fully handled; 0 when nothing was. */
  through = 0;
  /** Sequence of the last record on the session's subject this holder knows: its fencing position. */
  private lastSeq = 0;
  private base = 0;
  private deltas = 0;
  /** Ids in the deltas since the snapshot, and in the snapshot (as loaded): what compacting at open weighs. */
  private deltaIds = 0;
  private snapshotIds = 0;
  private fenced = false;
  /** This holder, in every record it writes: after a lost acknowledgement it recognises its own record. */
  private readonly writer = randomBytes(9).toString("base64url");
  private readonly subject: string;
  private readonly stream: string;

  private constructor(
    private readonly ctx: MeshContext,
    private readonly session: SessionAddress,
  ) {
    this.subject = ctx.names.seenSubject(session);
    this.stream = ctx.names.seenStream(session.instance);
  }

  /**
   * Load the log and fence it: from now on only this holder can append. The fence is one small
   * record (a snapshot instead when the deltas are due for compaction), so opening costs what the
   * log holds now, never its history.
   */
  static async open(ctx: MeshContext, session: SessionAddress): Promise<SeenLog> {
    for (let attempt = 1; ; attempt++) {
      const log = new SeenLog(ctx, session);
      await log.load();
      try {
        if (log.deltas > OPEN_COMPACT_DELTAS && log.deltaIds * 4 >= log.snapshotIds) await log.writeSnapshot();
        else await log.append([], undefined);
        return log;
      } catch (err) {
        // A previous holder's record landed between our read and our fence: read again.
        if (!(err instanceof LeaseLostError) || attempt >= FENCE_ATTEMPTS) throw err;
      }
    }
  }

  /**
   * Read the log as it stands without fencing it (an operator's peek): nothing is written, and the
   * view is not kept current. Never append through it.
   */
  static async read(ctx: MeshContext, session: SessionAddress): Promise<SeenView> {
    const log = new SeenLog(ctx, session);
    await log.load();
    log.fenced = true;
    return { through: log.through, has: (from, id) => log.has(from, id), size: log.size };
  }

  /** Surfaced already? (Records written before keys named the sender hold the bare id.) */
  has(fromInstance: string, id: string): boolean {
    return this.hasKey(surfacingKey(fromInstance, id), id);
  }

  /** `has` for a surfacing key already built (`surfacingKey(fromInstance, id)`). */
  hasKey(key: string, id: string): boolean {
    return this.ids.has(key) || (this.bareIds && this.ids.has(id));
  }

  get size(): number {
    return this.ids.size;
  }

  /**
   * Record `ids` (surfacing keys) as surfaced (and `through` as handled). Resolves once the server stored the record.
   * Throws LeaseLostError when another reader fenced this one out, SeenLogRefusedError when the
   * seen stream refused the write.
   */
  async append(ids: readonly string[], through: number | undefined): Promise<void> {
    const groups = [{ at: Date.now(), ids: [...ids] }];
    if (this.deltas >= MAX_DELTAS) {
      await this.writeSnapshot(groups, through);
      return;
    }
    // No snapshot yet (a young log): readers start from the subject's first record.
    const seq = await this.publish({ v: 1, kind: "delta", groups, ...(through !== undefined && { through }), ...(this.base > 0 && { base: this.base }) }, false);
    this.apply(groups, through);
    this.lastSeq = seq;
    this.deltas++;
  }

  private apply(groups: readonly SeenGroup[], through: number | undefined, into = this.ids): void {
    for (const g of groups) {
      for (const id of g.ids) {
        const at = into.get(id);
        if (at === undefined || at < g.at) into.set(id, g.at);
        if (!this.bareIds && !id.includes("/")) this.bareIds = true;
      }
    }
    if (through !== undefined && through > this.through) this.through = through;
  }

  /**
   * Read the last complete snapshot and everything after it. Where to start is in the last
   * record: its `base` (a delta's snapshot; a snapshot part's: the snapshot readers use until that
   * snapshot's last part is stored), else a one-part snapshot itself. Every record from there is
   * applied (a snapshot cut off by a failed or dying writer adds ids the log held anyway).
   */
  private async load(): Promise<void> {
    const last = await this.ctx.jsm.direct.getMessage(this.stream, { last_by_subj: this.subject });
    if (last === null) return;
    const lastRecord = this.parse(last);
    let cursor = lastRecord?.base ?? (lastRecord?.kind === "snapshot" && lastRecord.part === 0 && (lastRecord.of ?? 1) === 1 ? last.seq : 1);
    /** Ids in the parts of the snapshot being walked. */
    let partIds = 0;
    while (cursor <= last.seq) {
      const m = cursor === last.seq ? last : await this.ctx.jsm.direct.getMessage(this.stream, { seq: cursor, next_by_subj: this.subject });
      if (m === null || m.seq > last.seq) break;
      const r = this.parse(m);
      cursor = m.seq + 1;
      if (!r) continue;
      let n = 0;
      for (const g of r.groups) n += g.ids.length;
      if (r.kind === "delta") {
        this.deltas++;
        this.deltaIds += n;
      } else {
        const of = r.of ?? 1;
        const part = r.part ?? 0;
        // A one-part snapshot rolled the subject up: it is the whole state.
        if (of === 1) this.ids.clear();
        partIds = part === 0 ? n : partIds + n;
        // Complete once its last part is stored: the base later deltas name.
        if (part === of - 1) {
          this.base = of === 1 ? m.seq : (r.base ?? m.seq);
          this.deltas = 0;
          this.deltaIds = 0;
          this.snapshotIds = partIds;
        }
      }
      this.apply(r.groups, r.through);
    }
    this.lastSeq = last.seq;
  }

  private parse(m: StoredMsg) {
    let json: unknown;
    try {
      json = JSON.parse(decoder.decode(m.data));
    } catch {
      json = undefined;
    }
    if (isPlainSeenRecord(json)) return json;
    const r = SeenRecordSchema.safeParse(json);
    if (r.success) return r.data;
    this.ctx.logger.warn({ session: sessionKeyOf(this.session), seq: m.seq }, "skipping an unreadable surfaced-id record");
    return undefined;
  }

  /**
   * Write the whole state (pruned) as a snapshot, fenced at `lastSeq`, and record `pending` (ids
   * and `through` of the batch being confirmed) with it. The pending ids count as surfaced in this
   * process only once they are stored: a snapshot that fails records nothing of them, and their
   * batch comes back to be shown.
   *
   * One part: a single record with a subject rollup, which replaces every earlier record at once.
   * Several parts (a record stays under a quarter of `max_payload`) cannot replace the log at once,
   * so they are appended after it, each fenced, and the log stays readable at every step: until the
   * last part is stored, every part names the previous snapshot as `base`, where readers start (the
   * new parts then only repeat ids the log holds); the last part names the new snapshot's first
   * part. Then the records before it are purged, and the pending ids follow as a delta: a batch is
   * never recorded by a snapshot that may stay incomplete.
   */
  private async writeSnapshot(pending: readonly SeenGroup[] = [], pendingThrough?: number): Promise<void> {
    const horizon = Date.now() - this.ctx.config.retention.maxAgeMs - this.ctx.config.retention.duplicateWindowMs;
    for (const [id, at] of this.ids) if (at < horizon) this.ids.delete(id);
    let next = this.ids;
    if (pending.length > 0) {
      next = new Map(this.ids);
      for (const g of pending) for (const id of g.ids) next.set(id, Math.max(next.get(id) ?? 0, g.at));
    }
    const budget = Math.max(4096, Math.floor(this.ctx.serverMaxPayload / 4));
    const whole = snapshotParts(next, budget);
    if (whole.length === 1) {
      const seq = await this.publish({ v: 1, kind: "snapshot", part: 0, of: 1, groups: whole[0]!, through: Math.max(this.through, pendingThrough ?? 0) }, true);
      this.lastSeq = seq;
      this.base = seq;
      this.deltas = 0;
      if (pending.length > 0) {
        this.ids = next;
        this.apply(pending, pendingThrough);
      }
      return;
    }
    const parts = pending.length > 0 ? snapshotParts(this.ids, budget) : whole;
    const previous = this.base;
    let first = 0;
    for (let i = 0; i < parts.length; i++) {
      const base = i === parts.length - 1 ? first : previous;
      const seq = await this.publish({ v: 1, kind: "snapshot", part: i, of: parts.length, groups: parts[i]!, ...(i === 0 && { through: this.through }), ...(base > 0 && { base }) }, false);
      if (i === 0) first = seq;
      this.lastSeq = seq;
    }
    this.base = first;
    this.deltas = 0;
    await this.purgeBefore(first);
    if (pending.length > 0) await this.append(pending.flatMap((g) => g.ids), pendingThrough);
  }

  /** Remove the records a complete snapshot made obsolete (best effort: readers skip them anyway). */
  private async purgeBefore(seq: number): Promise<void> {
    try {
      await this.ctx.jsm.streams.purge(this.stream, { filter: this.subject, seq });
    } catch (err) {
      this.ctx.logger.debug({ err, session: sessionKeyOf(this.session) }, "could not purge the records before a surfaced-id snapshot; the next snapshot does");
    }
  }

  private async publish(record: object, rollup: boolean): Promise<number> {
    if (this.fenced) throw new LeaseLostError(sessionKeyOf(this.session));
    const h = headers();
    if (rollup) h.set("Nats-Rollup", "sub");
    const payload = JSON.stringify({ ...record, w: this.writer });
    try {
      const ack = await this.ctx.js.publish(this.subject, payload, {
        headers: h,
        expect: { streamName: this.stream, lastSubjectSequence: this.lastSeq },
      });
      return ack.seq;
    } catch (err) {
      if (isRevisionConflict(err)) {
        this.fenced = true;
        throw new LeaseLostError(sessionKeyOf(this.session));
      }
      if (apiCode(err) === ApiCodes.streamStoreFailed) throw new SeenLogRefusedError(sessionKeyOf(this.session), "the seen stream is full");
      // No acknowledgement (the connection dropped, the answer timed out): the record may be
      // stored all the same. It was if the subject's last record is this very one.
      if (isBusUnreachable(err)) {
        const stored = await this.storedWithoutAck(payload).catch(() => undefined);
        if (stored !== undefined) return stored;
      }
      throw err;
    }
  }

  /**
   * The sequence of `payload` if it is the subject's record right after the last one this holder
   * knows (the write whose acknowledgement was lost landed, and nothing came after it), else
   * undefined. The record names this holder, so another holder's record never matches.
   */
  private async storedWithoutAck(payload: string): Promise<number | undefined> {
    const last = await this.ctx.jsm.direct.getMessage(this.stream, { last_by_subj: this.subject });
    if (last === null || last.seq <= this.lastSeq || decoder.decode(last.data) !== payload) return undefined;
    // Only the write at the position this holder knew can have been stored (each is fenced at it).
    this.ctx.logger.info({ session: sessionKeyOf(this.session), seq: last.seq }, "surfaced-id record stored though its acknowledgement was lost");
    return last.seq;
  }
}

/** @internal A snapshot's parts: ids grouped by surfacing minute, newest first, no part's ids near `budget` bytes. */
export function snapshotParts(ids: ReadonlyMap<string, number>, budget: number): SeenGroup[][] {
  const byTime = new Map<number, string[]>();
  for (const [id, at] of ids) {
    // Minute resolution is plenty for pruning by days.
    const minute = at - (at % 60_000);
    const list = byTime.get(minute);
    if (list) list.push(id);
    else byTime.set(minute, [id]);
  }
  const parts: SeenGroup[][] = [[]];
  let size = 0;
  for (const [at, group] of [...byTime].sort((x, y) => y[0] - x[0])) {
    for (const id of group) {
      const cost = id.length + 3;
      if (size + cost > budget && size > 0) {
        parts.push([]);
        size = 0;
      }
      const part = parts.at(-1)!;
      const last = part.at(-1);
      if (last?.at === at) last.ids.push(id);
      else part.push({ at, ids: [id] });
      size += cost + (last?.at === at ? 0 : 24);
    }
  }
  return parts;
}
