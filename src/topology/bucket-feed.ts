/**
 * A live feed of one KV bucket's writes under a key filter, for one process: a single ephemeral
 * push consumer (new writes only, no acknowledgements, consumer state in memory) delivering to a
 * subject under this connection's own inbox prefix, which no other instance may subscribe or
 * publish to. A write reaches the process one delivery after the stream stored it, so what arrives
 * here is always stored state, never a write the stream refused.
 *
 * A feed is an accelerator, never a guarantee: whoever listens must still learn everything from
 * reads (the feed may be starting, may have missed writes while the connection was down, or may be
 * refused by an authorization that predates it). Hence no acknowledgements and no replay: on every
 * reconnect, and when its heartbeats stop, the feed starts over with a new consumer on a new
 * deliver subject. A superseded consumer is never deleted by the client (an instance's user may
 * not delete consumers on a shared bucket); the server removes it once nobody listens on its
 * deliver subject for `idleReapMs`.
 *
 * The consumer is created through the create API whose subject names the filter
 * (`$JS.API.CONSUMER.CREATE.<stream>.<name>.<filter>`): the broker can then allow an instance a
 * feed of its own keys only (authorization.ts).
 */
import { createInbox, nanos, type Msg, type NatsConnection, type Subscription } from "@nats-io/transport-node";
import { AckPolicy, DeliverPolicy, type JetStreamManager } from "@nats-io/jetstream";
import type { Logger } from "pino";
import { randomBytes } from "node:crypto";
import type { ConnectionState } from "../transport/connection.js";
import { isPermissionDenied } from "../transport/js-errors.js";

export interface BucketFeedConnection {
  readonly nc: NatsConnection;
  readonly jsm: JetStreamManager;
  readonly connection: ConnectionState;
  readonly logger: Logger;
  /** The connection's reply-subject prefix: the deliver subject lives under it. */
  readonly inboxPrefix: string;
}

export interface BucketFeedOptions {
  /** Idle heartbeat of the consumer; three missed in a row start the feed over (default 5 s). */
  readonly heartbeatMs?: number;
  /** How long the server keeps a consumer nobody listens to (default 30 s). */
  readonly idleReapMs?: number;
}

/** The stream sequence in a JetStream delivery's reply subject (v1 and v2 ack subject forms). */
export function deliveredSeq(reply: string | undefined): number | undefined {
  if (reply === undefined || !reply.startsWith("$JS.ACK.")) return undefined;
  const t = reply.split(".");
  const seq = t.length === 9 ? t[5] : t.length >= 11 ? t[7] : undefined;
  const n = Number(seq);
  return Number.isSafeInteger(n) && n > 0 ? n : undefined;
}

export class BucketFeed {
  private sub: Subscription | undefined;
  private starting: Promise<boolean> | undefined;
  private lastHeard = 0;
  private stopped = false;
  /** The authorization refused the feed: nothing more is tried. */
  private refused = false;
  private readonly offReconnect: () => void;
  private readonly check: NodeJS.Timeout;
  private readonly heartbeatMs: number;
  private readonly idleReapMs: number;

  constructor(
    private readonly conn: BucketFeedConnection,
    private readonly stream: string,
    private readonly filter: string,
    private readonly deliver: (m: Msg, seq: number) => void,
    opts: BucketFeedOptions = {},
  ) {
    this.heartbeatMs = opts.heartbeatMs ?? 5000;
    this.idleReapMs = opts.idleReapMs ?? 30_000;
    this.offReconnect = conn.connection.onReconnect(() => this.restart());
    this.check = setInterval(() => {
      if (this.starting || !this.conn.connection.connected) return;
      if (this.sub === undefined || Date.now() - this.lastHeard > 3 * this.heartbeatMs) this.restart();
    }, this.heartbeatMs).unref();
    this.restart();
  }

  /** True while a consumer delivers to this feed. */
  get live(): boolean {
    return this.sub !== undefined && this.starting === undefined;
  }

  /** Resolves once the attempt to start under way (if any) ended: true when the feed delivers. */
  async ready(): Promise<boolean> {
    return (await this.starting) ?? this.live;
  }

  stop(): void {
    this.stopped = true;
    this.offReconnect();
    clearInterval(this.check);
    this.retire();
  }

  private retire(): void {
    this.sub?.unsubscribe();
    this.sub = undefined;
  }

  private restart(): void {
    if (this.stopped || this.refused || this.starting || this.conn.nc.isClosed()) return;
    this.retire();
    this.starting = this.start()
      .then(() => this.sub !== undefined)
      .catch((err: unknown) => {
        if (isPermissionDenied(err)) {
          this.refused = true;
          this.conn.logger.warn({ stream: this.stream }, "the server's authorization does not allow this process a feed of its records; it reads them instead (regenerate the authorization with `clawmesh auth`)");
        } else this.conn.logger.debug({ err, stream: this.stream }, "bucket feed could not start yet; trying again");
        this.retire();
        return false;
      })
      .finally(() => (this.starting = undefined));
  }

  private async start(): Promise<void> {
    const deliverSubject = createInbox(this.conn.inboxPrefix);
    const sub = this.conn.nc.subscribe(deliverSubject, {
      callback: (err, m) => {
        if (err || sub !== this.sub) return;
        this.lastHeard = Date.now();
        // Idle heartbeats (status 100) only say the consumer is alive.
        if (m.headers?.code === 100) return;
        const seq = deliveredSeq(m.reply);
        if (seq !== undefined) this.deliver(m, seq);
      },
    });
    this.sub = sub;
    this.lastHeard = Date.now();
    await this.conn.jsm.consumers.add(this.stream, {
      name: `feed_${randomBytes(9).toString("base64url").replace(/[-_]/g, "x")}`,
      deliver_subject: deliverSubject,
      filter_subject: this.filter,
      ack_policy: AckPolicy.None,
      deliver_policy: DeliverPolicy.New,
      mem_storage: true,
      num_replicas: 1,
      idle_heartbeat: nanos(this.heartbeatMs),
      inactive_threshold: nanos(this.idleReapMs),
    });
    if (this.stopped) this.retire();
  }
}
