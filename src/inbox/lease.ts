/**
 * One reader per session at a time. A lease is a KV entry per session, written by compare-and-set:
 * `create` takes a free lease; an expired lease, or one whose holder no longer answers its liveness
 * subject (its process died: the server dropped its subscription), is taken over by `update` at the
 * revision that was read, so two contenders can never both win. The holder renews by CAS; a failed
 * renewal means someone took over and this reader must stop.
 */
import { randomUUID } from "node:crypto";
import type { Subscription } from "@nats-io/transport-node";
import { Kvm, type KV, type KvEntry } from "@nats-io/kv";
import { z } from "zod";
import { LeaseLostError, SessionBusyError } from "../errors.js";
import type { MeshContext } from "../mesh-context.js";
import type { SessionAddress } from "../address/index.js";
import { sessionKeyOf } from "../address/index.js";

const LeaseValueSchema = z.object({ holder: z.string(), label: z.string(), until: z.number() });
type LeaseValue = z.infer<typeof LeaseValueSchema>;

export interface AcquireOptions {
  /** Give up waiting for a busy session after this long (default: the lease TTL twice). */
  readonly waitMs?: number;
  readonly signal?: AbortSignal;
  /** Shown to contenders in SessionBusyError, e.g. "pid 1234". */
  readonly label?: string;
}

export class SessionLease {
  readonly holder = randomUUID().replaceAll("-", "");
  /** True when the lease was taken from a holder that died or expired (its batch may be in flight). */
  tookOver = false;
  private revision = 0;
  private lost = false;
  /** Local clock time until which no contender can take the lease by expiry. */
  private validUntil = 0;
  private renewing: Promise<void> | undefined;
  private renewTimer: NodeJS.Timeout | undefined;
  private pendingUntil = 0;
  private alive: Subscription | undefined;

  private constructor(
    private readonly ctx: MeshContext,
    private readonly kv: KV,
    private readonly key: string,
    private readonly session: SessionAddress,
    private readonly label: string,
  ) {}

  static async acquire(ctx: MeshContext, session: SessionAddress, opts: AcquireOptions = {}): Promise<SessionLease> {
    const kv = await new Kvm(ctx.nc).open(ctx.names.leaseBucket(session.instance), { bindOnly: true });
    const lease = new SessionLease(ctx, kv, ctx.names.leaseKey(session), session, opts.label ?? `pid ${process.pid}`);
    await lease.take(opts.waitMs ?? ctx.config.inbox.leaseTtlMs * 2, opts.signal);
    return lease;
  }

  private value(): Uint8Array {
    const v: LeaseValue = { holder: this.holder, label: this.label, until: Date.now() + this.ctx.config.inbox.leaseTtlMs };
    // Counted from before the write, so the local view never outlives what contenders see.
    this.pendingUntil = v.until;
    return new TextEncoder().encode(JSON.stringify(v));
  }

  private async take(waitMs: number, signal: AbortSignal | undefined): Promise<void> {
    // Answer liveness probes first, so a contender never sees us as dead while we hold the lease.
    this.alive = this.ctx.nc.subscribe(this.ctx.names.aliveSubject(this.session.instance, this.holder), {
      callback: (_err, msg) => {
        msg.respond();
      },
    });
    const deadline = Date.now() + waitMs;
    let lastHolder = "unknown";
    for (;;) {
      signal?.throwIfAborted();
      const entry = await this.kv.get(this.key);
      if (entry === null) {
        if (await this.tryCreate()) return this.started(false);
        continue;
      }
      if (entry.operation !== "PUT") {
        if (await this.tryUpdate(entry.revision)) return this.started(false);
        continue;
      }
      const current = parseLease(entry);
      lastHolder = current?.label ?? "an unreadable lease";
      if (current === undefined || current.until < Date.now() || !(await this.holderAlive(current.holder))) {
        if (await this.tryUpdate(entry.revision)) return this.started(true);
        continue;
      }
      const remaining = deadline - Date.now();
      if (remaining <= 0) {
        this.stopAnswering();
        throw new SessionBusyError(sessionKeyOf(this.session), lastHolder);
      }
      await this.waitForChange(entry.revision, Math.min(remaining, Math.max(current.until - Date.now(), 1)), signal);
    }
  }

  private async tryCreate(): Promise<boolean> {
    try {
      this.revision = await this.kv.create(this.key, this.value());
      this.validUntil = this.pendingUntil;
      return true;
    } catch {
      return false;
    }
  }

  private async tryUpdate(revision: number): Promise<boolean> {
    try {
      this.revision = await this.kv.update(this.key, this.value(), revision);
      this.validUntil = this.pendingUntil;
      return true;
    } catch {
      return false;
    }
  }

  private holderAlive(holder: string): Promise<boolean> {
    return holderAlive(this.ctx, this.session.instance, holder);
  }

  /** Wake when the lease key changes (release, renewal) or after `ms`, whichever is first. */
  private async waitForChange(revision: number, ms: number, signal: AbortSignal | undefined): Promise<void> {
    const watch = await this.kv.watch({ key: this.key, include: "updates" as never });
    const timer = setTimeout(() => watch.stop(), ms);
    const onAbort = () => watch.stop();
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      // Covers a change that happened between our get and the watch starting.
      const now = await this.kv.get(this.key);
      if (now !== null && now.revision !== revision) return;
      for await (const e of watch) {
        if (e.revision !== revision) break;
      }
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      watch.stop();
    }
  }

  private started(tookOver: boolean): void {
    this.tookOver = tookOver;
    const every = Math.max(Math.floor(this.ctx.config.inbox.leaseTtlMs / 3), 100);
    this.renewTimer = setInterval(() => {
      this.renew().catch((err: unknown) => this.ctx.logger.warn({ err, session: sessionKeyOf(this.session) }, "lease renewal failed"));
    }, every);
    this.renewTimer.unref();
  }

  /**
   * Throws LeaseLostError unless this reader still holds the lease. Free while the lease is well
   * inside its term (a contender can only take it by expiry or by finding this process dead);
   * renews first when the term is running out.
   */
  async ensureHeld(): Promise<void> {
    if (this.lost) throw new LeaseLostError(sessionKeyOf(this.session));
    if (Date.now() > this.validUntil - this.ctx.config.inbox.leaseTtlMs / 3) await this.renew();
  }

  /** Extend the lease; throws LeaseLostError if another reader took it over. One renewal at a time. */
  renew(): Promise<void> {
    this.renewing ??= this.renewNow().finally(() => {
      this.renewing = undefined;
    });
    return this.renewing;
  }

  private async renewNow(): Promise<void> {
    if (this.lost) throw new LeaseLostError(sessionKeyOf(this.session));
    try {
      this.revision = await this.kv.update(this.key, this.value(), this.revision);
      this.validUntil = this.pendingUntil;
    } catch (err) {
      if (/wrong last sequence|key exists/i.test(String(err))) {
        this.lost = true;
        this.stop();
        throw new LeaseLostError(sessionKeyOf(this.session));
      }
      throw err;
    }
  }

  get held(): boolean {
    return !this.lost;
  }

  async release(): Promise<void> {
    this.stop();
    if (this.lost) return;
    this.lost = true;
    try {
      await this.kv.delete(this.key, { previousSeq: this.revision });
    } catch (err) {
      this.ctx.logger.debug({ err, session: sessionKeyOf(this.session) }, "lease already gone at release");
    }
  }

  private stop(): void {
    if (this.renewTimer) clearInterval(this.renewTimer);
    this.renewTimer = undefined;
    this.stopAnswering();
  }

  private stopAnswering(): void {
    this.alive?.unsubscribe();
    this.alive = undefined;
  }
}

/**
 * A lease holder is alive while its process keeps its liveness subscription: "no responders" means
 * the process is gone. A slow or unreachable holder (timeout) counts as alive; its lease expires.
 */
export async function holderAlive(ctx: MeshContext, instance: string, holder: string): Promise<boolean> {
  try {
    await ctx.nc.request(ctx.names.aliveSubject(instance, holder), undefined, { timeout: 1000 });
    return true;
  } catch (err) {
    return !/no responders/i.test(`${String(err)} ${String((err as { cause?: unknown }).cause)}`);
  }
}

/** The lease currently recorded for a session, if any. */
export async function readLease(ctx: MeshContext, session: SessionAddress): Promise<{ holder: string; until: number } | undefined> {
  const kv = await new Kvm(ctx.nc).open(ctx.names.leaseBucket(session.instance), { bindOnly: true });
  const entry = await kv.get(ctx.names.leaseKey(session));
  return entry === null ? undefined : parseLease(entry);
}

export function parseLease(entry: KvEntry): LeaseValue | undefined {
  if (entry.operation !== "PUT") return undefined;
  try {
    const parsed = LeaseValueSchema.safeParse(entry.json());
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}
