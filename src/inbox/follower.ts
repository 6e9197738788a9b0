/**
 * A live feed of what lands on a filter of an inbox stream: one ordered consumer, starting at the
 * moment it is created. It survives the connection: on every reconnect (and if its consumer ever
 * stops on its own) it starts a new ordered consumer right after the last stream sequence it saw,
 * so what was stored while it was away is delivered at once instead of after the client's own
 * recovery (missed heartbeats: tens of seconds).
 *
 * Used for one session's filter (`SessionWatcher`) and for a whole instance's inboxes
 * (`followArrivals`): one long-lived consumer per feed, never one per message.
 */
import { DeliverPolicy, type Consumer, type ConsumerMessages, type JsMsg } from "@nats-io/jetstream";
import type { MeshContext } from "../mesh-context.js";

interface Feed {
  readonly consumer: Consumer;
  readonly messages: ConsumerMessages;
}

export interface FollowScope {
  readonly stream: string;
  readonly filter: string;
  /** Deliver subjects and headers only (no bodies): for followers that read nothing else. */
  readonly headersOnly?: boolean;
  /** Named in log lines. */
  readonly label: Record<string, unknown>;
}

/** Longest pause between attempts to restart the consumer while the server is not ready. */
const RESTART_BACKOFF_MAX_MS = 1000;

export class StreamFollower {
  private stopped = false;
  /** Bumped on each restart: a superseded feed's messages are ignored. */
  private generation = 0;
  private readonly offReconnect: () => void;

  private constructor(
    private readonly ctx: MeshContext,
    private readonly scope: FollowScope,
    private readonly deliver: (m: JsMsg) => void,
    private readonly resumed: () => void,
    private feed: Feed,
    /** Highest stream sequence delivered (or the stream's last sequence when the follow began). */
    private lastSeq: number,
  ) {
    this.offReconnect = ctx.connection.onReconnect(() => void this.restart());
    void this.pump(feed, this.generation);
  }

  /**
   * Follow `scope` from now on: `deliver` gets each message once, in stream order; `resumed` is
   * called each time the feed is back after a lost connection.
   */
  static async start(ctx: MeshContext, scope: FollowScope, deliver: (m: JsMsg) => void, resumed: () => void = () => {}): Promise<StreamFollower> {
    const feed = await openFeed(ctx, scope, undefined);
    // A consumer that delivers only new messages reports the stream's last sequence as delivered:
    // the point to resume after, even if nothing arrives before the connection drops.
    const info = await feed.consumer.info(true);
    return new StreamFollower(ctx, scope, deliver, resumed, feed, info.delivered.stream_seq);
  }

  stop(): void {
    this.stopped = true;
    this.offReconnect();
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
        const feed = await openFeed(this.ctx, this.scope, this.lastSeq);
        if (this.stopped || generation !== this.generation) {
          this.retire(feed);
          return;
        }
        this.feed = feed;
        void this.pump(feed, generation);
        this.ctx.logger.debug({ ...this.scope.label, after: this.lastSeq }, "stream follower resumed");
        this.resumed();
        return;
      } catch (err) {
        // Dropped again: the next reconnect starts over.
        if (!this.ctx.connection.connected) return;
        this.ctx.logger.debug({ err, attempt, ...this.scope.label }, "stream follower could not resume yet");
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
        this.deliver(m);
      }
    } catch (err) {
      if (!this.stopped && generation === this.generation) this.ctx.logger.warn({ err, ...this.scope.label }, "stream follower's consumer stopped; restarting it");
    }
    // The consumer ended without being replaced (the client gave up on it): start a new one.
    if (!this.stopped && generation === this.generation && !this.ctx.nc.isClosed() && this.ctx.connection.connected) {
      await pause(RESTART_BACKOFF_MAX_MS);
      if (!this.stopped && generation === this.generation) await this.restart();
    }
  }
}

/** An ordered consumer on the scope's filter: from `after + 1`, or from new messages on. */
async function openFeed(ctx: MeshContext, scope: FollowScope, after: number | undefined): Promise<Feed> {
  const consumer = await ctx.js.consumers.get(scope.stream, {
    filter_subjects: scope.filter,
    ...(scope.headersOnly === true && { headers_only: true }),
    ...(after === undefined ? { deliver_policy: DeliverPolicy.New } : { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: after + 1 }),
  });
  return { consumer, messages: await consumer.consume() };
}

/** A backoff pause that does not keep the process alive. */
function pause(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}
