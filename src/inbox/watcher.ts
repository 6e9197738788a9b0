/**
 * A live view of what lands in one session's inbox while its reader runs: an ordered consumer on
 * the session's filter, starting at the moment it is created. It lets inline replies and awaited
 * completions reach a waiting caller as soon as they are stored, without taking them out of
 * order from the durable inbox. Whatever a waiter claims is recorded as surfaced; everything else
 * stays in the inbox.
 *
 * The watcher survives the connection: on every reconnect (and if its consumer ever stops on its
 * own) it starts a new ordered consumer right after the last stream sequence it saw, so what was
 * stored while it was away is delivered at once instead of after the client's own recovery
 * (missed heartbeats: tens of seconds). Listeners that keep state elsewhere (`await` reads the
 * task registry) are told through `onResume` once it is back.
 */
import { DeliverPolicy, type Consumer, type ConsumerMessages } from "@nats-io/jetstream";
import { sessionKeyOf, type SessionAddress } from "../address/index.js";
import type { MeshContext } from "../mesh-context.js";
import { decodeEnvelope, type Envelope } from "../wire/index.js";

export type EnvelopeListener = (envelope: Envelope, seq: number) => void;

interface Feed {
  readonly consumer: Consumer;
  readonly messages: ConsumerMessages;
}

/** Longest pause between attempts to restart the consumer while the server is not ready. */
const RESTART_BACKOFF_MAX_MS = 1000;

export class SessionWatcher {
  private readonly listeners = new Set<EnvelopeListener>();
  private readonly resumeListeners = new Set<() => void>();
  private stopped = false;
  /** Bumped on each restart: a superseded feed's messages are ignored. */
  private generation = 0;
  private readonly offReconnect: () => void;

  private constructor(
    private readonly ctx: MeshContext,
    private readonly session: SessionAddress,
    private feed: Feed,
    /** Highest stream sequence delivered (or the stream's last sequence when the watch began). */
    private lastSeq: number,
  ) {
    this.offReconnect = ctx.connection.onReconnect(() => void this.restart());
    void this.pump(feed, this.generation);
  }

  static async start(ctx: MeshContext, session: SessionAddress): Promise<SessionWatcher> {
    const feed = await openFeed(ctx, session, undefined);
    // A consumer that delivers only new messages reports the stream's last sequence as delivered:
    // the point to resume after, even if nothing arrives before the connection drops.
    const info = await feed.consumer.info(true);
    return new SessionWatcher(ctx, session, feed, info.delivered.stream_seq);
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
    this.stopped = true;
    this.offReconnect();
    this.listeners.clear();
    this.resumeListeners.clear();
    this.retire(this.feed);
  }

  /** Replace the feed with one that starts right after the last sequence seen. */
  private async restart(): Promise<void> {
    if (this.stopped) return;
    const generation = ++this.generation;
    this.retire(this.feed);
    for (let attempt = 0; ; attempt++) {
      if (this.stopped || generation !== this.generation || this.ctx.nc.isClosed()) return;
      try {
        const feed = await openFeed(this.ctx, this.session, this.lastSeq);
        if (this.stopped || generation !== this.generation) {
          this.retire(feed);
          return;
        }
        this.feed = feed;
        void this.pump(feed, generation);
        this.ctx.logger.debug({ session: sessionKeyOf(this.session), after: this.lastSeq }, "session watcher resumed");
        for (const l of [...this.resumeListeners]) l();
        return;
      } catch (err) {
        // Dropped again: the next reconnect starts over.
        if (!this.ctx.connection.connected) return;
        this.ctx.logger.debug({ err, attempt, session: sessionKeyOf(this.session) }, "session watcher could not resume yet");
        await pause(Math.min(RESTART_BACKOFF_MAX_MS, 50 * 2 ** attempt));
      }
    }
  }

  private retire(feed: Feed): void {
    feed.messages.stop();
    // Ordered consumers are ephemeral; removing one the server still has frees it at once.
    if (!this.ctx.nc.isClosed() && this.ctx.connection.connected) void feed.consumer.delete().catch(() => undefined);
  }

  private async pump(feed: Feed, generation: number): Promise<void> {
    try {
      for await (const m of feed.messages) {
        if (generation !== this.generation) break;
        // A message seen through an earlier feed is not delivered twice.
        if (m.seq <= this.lastSeq) continue;
        this.lastSeq = m.seq;
        // Undecodable messages are the inbox reader's to park; the watcher just ignores them.
        const decoded = decodeEnvelope(m.data, this.ctx.messageLimit);
        if (!decoded.ok) continue;
        // Same sender check as the reader: a forged envelope must not resolve a waiter.
        if (this.ctx.names.parseInboxSubject(m.subject)?.fromInstance !== decoded.envelope.from.instance) continue;
        for (const l of [...this.listeners]) l(decoded.envelope, m.seq);
      }
    } catch (err) {
      if (!this.stopped && generation === this.generation) this.ctx.logger.warn({ err, session: sessionKeyOf(this.session) }, "session watcher's consumer stopped; restarting it");
    }
    // The consumer ended without being replaced (the client gave up on it): start a new one.
    if (!this.stopped && generation === this.generation && !this.ctx.nc.isClosed() && this.ctx.connection.connected) {
      await pause(RESTART_BACKOFF_MAX_MS);
      if (!this.stopped && generation === this.generation) await this.restart();
    }
  }
}

/** An ordered consumer on the session's filter: from `after + 1`, or from new messages on. */
async function openFeed(ctx: MeshContext, session: SessionAddress, after: number | undefined): Promise<Feed> {
  const consumer = await ctx.js.consumers.get(ctx.names.inboxStream(session.instance), {
    filter_subjects: ctx.names.sessionFilter(session),
    ...(after === undefined ? { deliver_policy: DeliverPolicy.New } : { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: after + 1 }),
  });
  return { consumer, messages: await consumer.consume() };
}

/** A backoff pause that does not keep the process alive. */
function pause(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}
