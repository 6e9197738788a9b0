/**
 * A live view of what lands in one session's inbox while its reader runs: an ordered consumer on
 * the session's filter (a `StreamFollower`), starting at the moment it is created. It lets inline
 * replies and awaited completions reach a waiting caller as soon as they are stored, without
 * taking them out of order from the durable inbox. Whatever a waiter claims is recorded as
 * surfaced; everything else stays in the inbox.
 *
 * It survives the connection (see follower.ts); listeners that keep state elsewhere (`await`
 * reads the task registry) are told through `onResume` once it is back.
 */
import type { JsMsg } from "@nats-io/jetstream";
import { sessionKeyOf, type SessionAddress } from "../address/index.js";
import type { MeshContext } from "../mesh-context.js";
import { decodeEnvelope, type Envelope } from "../wire/index.js";
import { StreamFollower } from "./follower.js";

export type EnvelopeListener = (envelope: Envelope, seq: number) => void;

export class SessionWatcher {
  private readonly listeners = new Set<EnvelopeListener>();
  private readonly resumeListeners = new Set<() => void>();
  private follower: StreamFollower | undefined;

  private constructor(private readonly ctx: MeshContext) {}

  static async start(ctx: MeshContext, session: SessionAddress): Promise<SessionWatcher> {
    const w = new SessionWatcher(ctx);
    w.follower = await StreamFollower.start(
      ctx,
      { stream: ctx.names.inboxStream(session.instance), filter: ctx.names.sessionFilter(session), label: { session: sessionKeyOf(session) } },
      (m) => w.deliver(m),
      () => {
        for (const l of [...w.resumeListeners]) l();
      },
    );
    return w;
  }

  /** Call `listener` for each decodable envelope that lands from now on; returns an unsubscribe. */
  on(listener: EnvelopeListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Call `listener` each time the watcher is back after a lost connection; returns an unsubscribe. */
  onResume(listener: () => void): () => void {
    this.resumeListeners.add(listener);
    return () => this.resumeListeners.delete(listener);
  }

  /** Resolve with the first envelope matching `predicate`, or undefined when `signal` aborts. */
  waitFor(predicate: (e: Envelope) => boolean, signal: AbortSignal): Promise<Envelope | undefined> {
    return new Promise((resolve) => {
      if (signal.aborted) return resolve(undefined);
      const off = this.on((e) => {
        if (!predicate(e)) return;
        off();
        signal.removeEventListener("abort", onAbort);
        resolve(e);
      });
      const onAbort = () => {
        off();
        resolve(undefined);
      };
      signal.addEventListener("abort", onAbort, { once: true });
    });
  }

  stop(): void {
    this.listeners.clear();
    this.resumeListeners.clear();
    this.follower?.stop();
  }

  private deliver(m: JsMsg): void {
    // Undecodable messages are the inbox reader's to park; the watcher just ignores them.
    const decoded = decodeEnvelope(m.data, this.ctx.messageLimit);
    if (!decoded.ok) return;
    // Same sender check as the reader: a forged envelope must not resolve a waiter.
    if (this.ctx.names.parseInboxSubject(m.subject)?.fromInstance !== decoded.envelope.from.instance) return;
    for (const l of [...this.listeners]) l(decoded.envelope, m.seq);
  }
}
