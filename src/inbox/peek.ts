/**
 * The operator's view of a session's inbox: what is pending (stored after the surfaced-id log's
 * `through` and not recorded in it), read by direct gets without touching the lease or the
 * session's consumer, and moving pending messages to another session (redirect).
 *
 * Redirect is exactly-once across crashes: while holding the source session's inbox (its lease),
 * each pending message is stored at the target under an id derived from the source session and
 * the original id (`ReservedIds.redirect`), then the original id is claimed in the source's
 * surfaced-id log. A crash between the two re-publishes the same id on the next run (the stream's
 * duplicate window, then the target's surfaced-id log, make that harmless) and claims it; a crash
 * before the publish left nothing to undo.
 */
import type { StoredMsg } from "@nats-io/jetstream";
import { sessionKeyOf, type SessionAddress } from "../address/index.js";
import type { MeshContext } from "../mesh-context.js";
import { ReservedIds, decodeEnvelope, type Envelope, type WireAddress } from "../wire/index.js";
import type { Inbox } from "./inbox.js";
import { sendEnvelope } from "./outbox.js";
import { SeenLog, surfacingKey } from "./seen-log.js";

export interface PendingMessage {
  /** Inbox stream sequence. */
  readonly seq: number;
  /** Envelope id; undefined for a stored message that does not decode (a take parks it). */
  readonly id?: string;
  readonly kind: string;
  readonly from?: WireAddress;
  readonly sentAt?: string;
  /** When the stream stored it. */
  readonly storedAt: string;
  readonly size: number;
  /** Why a take would park it instead of showing it. */
  readonly unreadable?: string;
  readonly envelope?: Envelope;
}

export interface PendingSummary {
  readonly count: number;
  /** Storage time of the oldest pending message. */
  readonly oldest?: string;
  /** The log's `through`: messages at or below it are handled. */
  readonly through: number;
}

/** Pending messages of `session`, oldest first (at most `max`, default all). */
export async function readPending(ctx: MeshContext, session: SessionAddress, opts: { readonly max?: number } = {}): Promise<PendingMessage[]> {
  const out: PendingMessage[] = [];
  for await (const p of iteratePending(ctx, session)) {
    out.push(p);
    if (opts.max !== undefined && out.length >= opts.max) break;
  }
  return out;
}

/** How many messages are pending for `session`, and since when. */
export async function summarizePending(ctx: MeshContext, session: SessionAddress): Promise<PendingSummary> {
  let count = 0;
  let oldest: string | undefined;
  const seen = await SeenLog.read(ctx, session);
  for await (const p of iteratePending(ctx, session, seen)) {
    count++;
    oldest ??= p.storedAt;
  }
  return { count, through: seen.through, ...(oldest !== undefined && { oldest }) };
}

async function* iteratePending(ctx: MeshContext, session: SessionAddress, view?: { through: number; has(fromInstance: string, id: string): boolean }): AsyncGenerator<PendingMessage> {
  const seen = view ?? (await SeenLog.read(ctx, session));
  const stream = ctx.names.inboxStream(session.instance);
  const filter = ctx.names.sessionFilter(session);
  const last = await ctx.jsm.direct.getMessage(stream, { last_by_subj: filter });
  if (last === null || last.seq <= seen.through) return;
  const ids = new Set<string>();
  for (let seq = seen.through + 1; seq <= last.seq; ) {
    const m = seq === last.seq ? last : await ctx.jsm.direct.getMessage(stream, { seq, next_by_subj: filter });
    if (m === null || m.seq > last.seq) return;
    seq = m.seq + 1;
    const p = toPending(ctx, m);
    const from = ctx.names.parseInboxSubject(m.subject)?.fromInstance ?? "";
    const key = p.id === undefined ? "" : surfacingKey(from, p.id);
    if (p.id !== undefined && (seen.has(from, p.id) || ids.has(key))) continue;
    if (p.id !== undefined) ids.add(key);
    yield p;
  }
}

function toPending(ctx: MeshContext, m: StoredMsg): PendingMessage {
  const storedAt = m.time.toISOString();
  const subject = ctx.names.parseInboxSubject(m.subject);
  const decoded = decodeEnvelope(m.data, ctx.messageLimit);
  if (!decoded.ok) return { seq: m.seq, kind: subject?.kind ?? "", storedAt, size: m.data.length, unreadable: decoded.error.code };
  const env = decoded.envelope;
  return { seq: m.seq, id: env.id, kind: env.kind, from: env.from, sentAt: env.sentAt, storedAt, size: m.data.length, envelope: env };
}

export interface RedirectOptions {
  /** Move only messages of this kind. */
  readonly kind?: string;
  /** List what would move; move nothing. */
  readonly dryRun?: boolean;
  /** Called after each message is moved (or, in a dry run, listed). */
  readonly onMoved?: (m: RedirectedMessage, done: number, total: number) => void;
}

export interface RedirectedMessage {
  readonly id: string;
  /** The id of the copy stored at the target. */
  readonly newId: string;
  readonly kind: string;
  readonly seq: number;
}

export interface RedirectResult {
  readonly moved: readonly RedirectedMessage[];
  /** Pending messages left behind: unreadable ones (a take parks them) and other kinds. */
  readonly skipped: number;
}

/**
 * Move the pending messages of `inbox`'s session to `target` (see the module comment). The caller
 * holds `inbox` open for the whole call.
 */
export async function redirectPending(ctx: MeshContext, inbox: Inbox, target: SessionAddress, opts: RedirectOptions = {}): Promise<RedirectResult> {
  const source = inbox.session;
  const sourceKey = `${source.instance}/${sessionKeyOf(source)}`;
  const pending = await readPending(ctx, source);
  const movable = pending.filter((p) => p.envelope !== undefined && (opts.kind === undefined || p.kind === opts.kind) && !inbox.surfaced(p.envelope.from.instance, p.envelope.id));
  const moved: RedirectedMessage[] = [];
  for (const p of movable) {
    const env = p.envelope!;
    const m: RedirectedMessage = { id: env.id, newId: ReservedIds.redirect(sourceKey, env.id), kind: env.kind, seq: p.seq };
    if (!opts.dryRun) {
      const { run: _run, ...from } = source;
      const copy: Envelope = {
        ...env,
        id: m.newId,
        from: { ...from },
        to: { instance: target.instance, agent: target.agent, channel: target.channel, session: target.session },
        redirectedFrom: { instance: source.instance, sessionKey: sessionKeyOf(source), id: env.id, from: env.from },
      };
      await sendEnvelope(ctx, copy);
      await inbox.claim(env.from.instance, env.id);
    }
    moved.push(m);
    opts.onMoved?.(m, moved.length, movable.length);
  }
  return { moved, skipped: pending.length - movable.length };
}

/**
 * Sessions of `instance` with anything stored in its inbox stream (handled or not), from the
 * stream's subject list: one stream-info request, no consumer.
 */
export async function sessionsWithStored(ctx: MeshContext, instance: string): Promise<SessionAddress[]> {
  const info = await ctx.jsm.streams.info(ctx.names.inboxStream(instance), { subjects_filter: ctx.names.inboxWildcard(instance) });
  const out = new Map<string, SessionAddress>();
  for (const subject of Object.keys(info.state.subjects ?? {})) {
    const p = ctx.names.parseInboxSubject(subject);
    if (!p || p.toInstance !== instance) continue;
    const a: SessionAddress = { instance, agent: p.agent, channel: p.channel, session: p.session };
    out.set(sessionKeyOf(a), a);
  }
  return [...out.values()];
}

export interface TailEvent {
  /** When this reader saw it. */
  readonly at: string;
  readonly id: string;
  readonly kind: string;
  /** `instance/session key` of the sender and the recipient. */
  readonly from: string;
  readonly to: string;
  /** When the sender created it (its clock). */
  readonly sentAt: string;
  readonly body: Envelope["body"];
}

export interface Tail {
  /** Resolves once the server has the subscription. */
  readonly ready: Promise<void>;
  /** Settles when the tail ends: resolves after `close()`, rejects when the server refused or ended it. */
  readonly done: Promise<void>;
  close(): void;
}

/**
 * Follow envelopes as they are published to an instance's inboxes (or one session's) with a core
 * subscription: nothing is acknowledged or recorded, and messages stored before it are not shown.
 */
export function tailInboxes(ctx: MeshContext, scope: { readonly instance: string; readonly session?: SessionAddress }, onEvent: (e: TailEvent) => void): Tail {
  const subject = scope.session ? ctx.names.sessionFilter(scope.session) : ctx.names.inboxWildcard(scope.instance);
  let settle!: (err?: unknown) => void;
  const done = new Promise<void>((resolve, reject) => (settle = (err) => (err === undefined ? resolve() : reject(err))));
  const sub = ctx.nc.subscribe(subject, {
    callback: (err, m) => {
      if (err) {
        settle(err);
        return;
      }
      const d = decodeEnvelope(m.data, ctx.messageLimit);
      if (!d.ok) return;
      const e = d.envelope;
      onEvent({ at: new Date().toISOString(), id: e.id, kind: e.kind, from: `${e.from.instance}/${sessionKeyOf(e.from)}`, to: `${e.to.instance}/${sessionKeyOf(e.to)}`, sentAt: e.sentAt, body: e.body });
    },
  });
  void sub.closed.then(
    () => settle(),
    (err: unknown) => settle(err),
  );
  return {
    ready: ctx.nc.flush(),
    done,
    close: () => {
      sub.unsubscribe();
      settle();
    },
  };
}

/** Instances with an inbox stream on this mesh (the stream list, filtered by the inbox subjects). */
export async function inboxInstances(ctx: MeshContext): Promise<string[]> {
  const head = ctx.names.inboxStream("");
  const out: string[] = [];
  for await (const name of ctx.jsm.streams.names(`${ctx.names.prefix}.in.>`)) if (name.startsWith(head)) out.push(name.slice(head.length));
  return out.sort();
}
