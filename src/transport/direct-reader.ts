/**
 * Many JetStream direct gets at once, for listings: a bucket of 100k records is read key by key
 * (the only read an instance may make of the shared buckets, besides stream info), and one
 * `jsm.direct.getMessage` per key (a request each: a mux entry, a timer, a promise) spends more
 * client CPU than the server spends answering. Like `JetStreamIngest`, this publishes each request
 * with a reply subject under one long-lived inbox subscription and matches answers by token, with a
 * bounded window of requests in flight. No server consumer is involved.
 */
import { createInbox, type Msg, type MsgHdrs, type NatsConnection, type Subscription } from "@nats-io/transport-node";
import { MeshError } from "../errors.js";

/** One direct get: the last message on a subject, or the message at (or, with `nextBySubject`, after) a sequence. */
export type DirectRequest = { readonly lastBySubject: string } | { readonly seq: number; readonly nextBySubject?: string };

export interface DirectMsg {
  readonly subject: string;
  readonly seq: number;
  readonly data: Uint8Array;
  readonly header: MsgHdrs | undefined;
}

/** A direct get answered with an error other than "not found" (or not answered in time). */
export class DirectGetError extends MeshError {
  readonly status: number | undefined;
  constructor(stream: string, detail: string, status?: number) {
    super("direct_get_failed", `direct get on ${stream} failed: ${detail}`);
    this.status = status;
  }
}

/** Requests in flight at once by default: enough to keep the server busy, few enough not to flood the connection. */
export const DIRECT_WINDOW = 256;
const NOT_FOUND = 404;

interface Batch {
  readonly stream: string;
  readonly requests: readonly DirectRequest[];
  readonly out: (DirectMsg | null)[];
  next: number;
  answered: number;
  inFlight: number;
  lastProgress: number;
  readonly window: number;
  readonly resolve: (out: (DirectMsg | null)[]) => void;
  readonly reject: (err: unknown) => void;
}

export class DirectReader {
  private readonly prefix: string;
  private sub: Subscription | undefined;
  /** token -> batch and index of the request it answers. */
  private readonly waiting = new Map<string, { batch: Batch; index: number }>();
  private readonly batches = new Set<Batch>();
  private timer: NodeJS.Timeout | undefined;
  private nextToken = 0;

  constructor(
    private readonly nc: NatsConnection,
    opts: { readonly inboxPrefix?: string; readonly timeoutMs?: number } = {},
  ) {
    this.prefix = createInbox(opts.inboxPrefix);
    this.timeoutMs = opts.timeoutMs ?? 5000;
  }

  private readonly timeoutMs: number;

  /** The answers in request order: the message, or null where there is none. Rejects on any other error. */
  getMany(stream: string, requests: readonly DirectRequest[], window = DIRECT_WINDOW): Promise<(DirectMsg | null)[]> {
    if (requests.length === 0) return Promise.resolve([]);
    this.sub ??= this.nc.subscribe(`${this.prefix}.*`, { callback: (_err, msg) => this.onAnswer(msg) });
    this.timer ??= setInterval(() => this.expire(), Math.min(1000, this.timeoutMs)).unref();
    return new Promise((resolve, reject) => {
      const batch: Batch = { stream, requests, out: new Array<DirectMsg | null>(requests.length).fill(null), next: 0, answered: 0, inFlight: 0, lastProgress: Date.now(), window, resolve, reject };
      this.batches.add(batch);
      this.pump(batch);
    });
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.sub?.unsubscribe();
    this.sub = undefined;
    for (const b of [...this.batches]) this.fail(b, new MeshError("closed", "the connection closed during a listing"));
  }

  private pump(batch: Batch): void {
    try {
      while (batch.inFlight < batch.window && batch.next < batch.requests.length) {
        const index = batch.next++;
        const r = batch.requests[index]!;
        const token = (this.nextToken++).toString(36);
        this.waiting.set(token, { batch, index });
        batch.inFlight++;
        const reply = `${this.prefix}.${token}`;
        if ("lastBySubject" in r) this.nc.publish(`$JS.API.DIRECT.GET.${batch.stream}.${r.lastBySubject}`, undefined, { reply });
        else this.nc.publish(`$JS.API.DIRECT.GET.${batch.stream}`, JSON.stringify(r.nextBySubject === undefined ? { seq: r.seq } : { seq: r.seq, next_by_subj: r.nextBySubject }), { reply });
      }
    } catch (err) {
      this.fail(batch, err);
    }
  }

  private onAnswer(msg: Msg): void {
    const token = msg.subject.slice(this.prefix.length + 1);
    const w = this.waiting.get(token);
    if (!w) return;
    this.waiting.delete(token);
    const { batch, index } = w;
    if (!this.batches.has(batch)) return;
    batch.inFlight--;
    batch.answered++;
    batch.lastProgress = Date.now();
    const h = msg.headers;
    const code = h?.code ?? 0;
    if (code !== 0 && code !== NOT_FOUND) {
      this.fail(batch, new DirectGetError(batch.stream, `${code} ${h?.description ?? ""}`.trim(), code));
      return;
    }
    if (code === 0) batch.out[index] = { subject: h?.get("Nats-Subject") ?? "", seq: Number(h?.get("Nats-Sequence") ?? 0), data: msg.data, header: h };
    if (batch.answered === batch.requests.length) {
      this.batches.delete(batch);
      this.idle();
      batch.resolve(batch.out);
    } else {
      this.pump(batch);
    }
  }

  private fail(batch: Batch, err: unknown): void {
    if (!this.batches.delete(batch)) return;
    for (const [token, w] of this.waiting) if (w.batch === batch) this.waiting.delete(token);
    this.idle();
    batch.reject(err);
  }

  /** Nothing to watch over while no listing runs. */
  private idle(): void {
    if (this.batches.size > 0 || !this.timer) return;
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** A batch that got no answer for the timeout (the connection dropped, the server is gone) fails as a whole. */
  private expire(): void {
    const now = Date.now();
    for (const b of [...this.batches]) if (now - b.lastProgress > this.timeoutMs) this.fail(b, new DirectGetError(b.stream, `no answer within ${this.timeoutMs} ms`));
  }
}
