/**
 * Acknowledged JetStream publishing for the mesh's send path.
 *
 * `js.publish()` opens a request per message: a new deferred, a timer and a mux entry each, plus a
 * throwaway error object when it completes. The mesh instead publishes with a reply subject under
 * one long-lived inbox subscription and matches each stream acknowledgement to its message by
 * token, expiring stragglers with one shared sweep. Semantics are unchanged: a send resolves only
 * when the stream has stored the message (or recognised its Nats-Msg-Id as a duplicate), and
 * rejects on a stream error, on "no responders" (no stream for the subject) or on timeout.
 */
import { createInbox, headers, type NatsConnection, type Msg, type Subscription } from "@nats-io/transport-node";
import { MeshError } from "../errors.js";

export interface StreamAck {
  readonly stream: string;
  readonly seq: number;
  readonly duplicate: boolean;
}

export class NoStreamError extends MeshError {
  constructor(subject: string) {
    super("no_stream", `no stream stores subject ${subject}`);
  }
}

export class StreamRefusedError extends MeshError {
  readonly errCode: number | undefined;
  constructor(description: string, errCode: number | undefined) {
    super("stream_refused", `the stream refused the message: ${description}`);
    this.errCode = errCode;
  }
}

export class AckTimeoutError extends MeshError {
  constructor(ms: number) {
    super("ack_timeout", `no acknowledgement from the stream within ${ms} ms`);
  }
}

interface Waiting {
  readonly resolve: (a: StreamAck) => void;
  readonly reject: (e: unknown) => void;
  readonly subject: string;
  readonly deadline: number;
}

const decoder = new TextDecoder();

export class JetStreamIngest {
  private readonly prefix: string;
  private readonly sub: Subscription;
  private readonly waiting = new Map<string, Waiting>();
  private readonly sweep: NodeJS.Timeout;
  private next = 0;
  private readonly timeoutMs: number;

  constructor(
    private readonly nc: NatsConnection,
    opts: { timeoutMs?: number; inboxPrefix?: string } = {},
  ) {
    this.timeoutMs = opts.timeoutMs ?? 5000;
    this.prefix = createInbox(opts.inboxPrefix);
    this.sub = nc.subscribe(`${this.prefix}.*`, { callback: (_err, msg) => this.onAck(msg) });
    this.sweep = setInterval(() => this.expire(), Math.min(250, this.timeoutMs)).unref();
  }

  publish(subject: string, data: Uint8Array, msgId: string, expectedStream: string): Promise<StreamAck> {
    const token = (this.next++).toString(36);
    const h = headers();
    h.append("Nats-Msg-Id", msgId);
    h.append("Nats-Expected-Stream", expectedStream);
    return new Promise<StreamAck>((resolve, reject) => {
      this.waiting.set(token, { resolve, reject, subject, deadline: Date.now() + this.timeoutMs });
      try {
        this.nc.publish(subject, data, { reply: `${this.prefix}.${token}`, headers: h });
      } catch (err) {
        this.waiting.delete(token);
        reject(err);
      }
    });
  }

  /**
   * The connection dropped: acknowledgements still awaited were addressed to it and will not come.
   * Fail them now (the send path retries each under its envelope id once the connection is back)
   * instead of letting each wait out its timeout.
   */
  abandonInFlight(): void {
    for (const w of this.waiting.values()) w.reject(new MeshError("connection_lost", "the connection dropped before the stream acknowledged"));
    this.waiting.clear();
  }

  close(): void {
    clearInterval(this.sweep);
    this.sub.unsubscribe();
    for (const w of this.waiting.values()) w.reject(new MeshError("closed", "the mesh connection closed before the stream acknowledged"));
    this.waiting.clear();
  }

  private onAck(msg: Msg): void {
    const token = msg.subject.slice(this.prefix.length + 1);
    const w = this.waiting.get(token);
    if (!w) return;
    this.waiting.delete(token);
    if (msg.headers?.hasError) {
      w.reject(msg.headers.code === 503 ? new NoStreamError(w.subject) : new StreamRefusedError(msg.headers.description, undefined));
      return;
    }
    try {
      const ack = JSON.parse(decoder.decode(msg.data)) as { stream?: string; seq?: number; duplicate?: boolean; error?: { description?: string; err_code?: number } };
      if (ack.error) w.reject(new StreamRefusedError(ack.error.description ?? "unknown error", ack.error.err_code));
      else if (typeof ack.stream === "string" && typeof ack.seq === "number") w.resolve({ stream: ack.stream, seq: ack.seq, duplicate: ack.duplicate === true });
      else w.reject(new StreamRefusedError("malformed acknowledgement", undefined));
    } catch (err) {
      w.reject(err);
    }
  }

  private expire(): void {
    const now = Date.now();
    for (const [token, w] of this.waiting) {
      if (w.deadline > now) continue;
      this.waiting.delete(token);
      w.reject(new AckTimeoutError(this.timeoutMs));
    }
  }
}
