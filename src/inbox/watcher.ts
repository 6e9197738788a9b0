/**
 * A live view of what lands in one session's inbox while its reader runs: an ordered consumer on
 * the session's filter, starting at the moment it is created. It lets inline replies and awaited
 * completions reach a waiting caller as soon as they are stored, without taking them out of
 * order from the durable inbox. Whatever a waiter claims is recorded as surfaced; everything else
 * stays in the inbox.
 */
import { DeliverPolicy, type ConsumerMessages } from "@nats-io/jetstream";
import type { SessionAddress } from "../address/index.js";
import type { MeshContext } from "../mesh-context.js";
import { decodeEnvelope, type Envelope } from "../wire/index.js";

export type EnvelopeListener = (envelope: Envelope, seq: number) => void;

export class SessionWatcher {
  private readonly listeners = new Set<EnvelopeListener>();
  private stopped = false;

  private constructor(
    private readonly ctx: MeshContext,
    private readonly messages: ConsumerMessages,
  ) {
    void this.pump();
  }

  static async start(ctx: MeshContext, session: SessionAddress): Promise<SessionWatcher> {
    const consumer = await ctx.js.consumers.get(ctx.names.inboxStream(session.instance), {
      filter_subjects: ctx.names.sessionFilter(session),
      deliver_policy: DeliverPolicy.New,
    });
    return new SessionWatcher(ctx, await consumer.consume());
  }

  /** Call `listener` for each decodable envelope that lands from now on; returns an unsubscribe. */
  on(listener: EnvelopeListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
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
    this.stopped = true;
    this.listeners.clear();
    this.messages.stop();
  }

  private async pump(): Promise<void> {
    try {
      for await (const m of this.messages) {
        // Undecodable messages are the inbox reader's to park; the watcher just ignores them.
        const decoded = decodeEnvelope(m.data, this.ctx.messageLimit);
        if (!decoded.ok) continue;
        // Same sender check as the reader: a forged envelope must not resolve a waiter.
        if (this.ctx.names.parseInboxSubject(m.subject)?.fromInstance !== decoded.envelope.from.instance) continue;
        for (const l of [...this.listeners]) l(decoded.envelope, m.seq);
      }
    } catch (err) {
      if (!this.stopped) this.ctx.logger.warn({ err }, "session watcher stopped");
    }
  }
}
