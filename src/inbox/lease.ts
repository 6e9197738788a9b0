/**
 * One reader per session at a time. A lease is a KV entry per session, written by compare-and-set:
 * `create` takes a free lease; an expired lease, or one whose holder no longer answers its liveness
 * subject (its process died: the server dropped its subscription), is taken over by `update` at the
 * revision that was read, so two contenders can never both win. The holder renews by CAS; a failed
 * renewal means someone took over and this reader must stop.
 */
import { randomUUID } from "node:crypto";
import type { Subscription } from "@nats-io/transport-node";
import { z } from "zod";
import { LeaseLostError, SessionBusyError } from "../errors.js";
import type { MeshContext } from "../mesh-context.js";
import type { SessionAddress } from "../address/index.js";
import { sessionKeyOf } from "../address/index.js";
import { KvStore } from "../topology/index.js";
import { isNoResponders } from "../transport/js-errors.js";

const LeaseValueSchema = z.object({ holder: z.string(), label: z.string(), until: z.number() });
type LeaseValue = z.infer<typeof LeaseValueSchema>;
export type LeaseStore = KvStore<typeof LeaseValueSchema>;

/** The lease bucket of an instance. */
export function openLeaseStore(ctx: MeshContext, instance: string): Promise<LeaseStore> {
  return KvStore.open(ctx, ctx.names.leaseBucket(instance), LeaseValueSchema);
}

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
    private readonly store: LeaseStore,
    private readonly key: string,
    private readonly session: SessionAddress,
    private readonly label: string,
  ) {}

  static async acquire(ctx: MeshContext, session: SessionAddress, opts: AcquireOptions = {}): Promise<SessionLease> {
    const store = await openLeaseStore(ctx, session.instance);
    const lease = new SessionLease(ctx, store, ctx.names.leaseKey(session), session, opts.label ?? `pid ${process.pid}`);
    await lease.take(opts.waitMs ?? ctx.config.inbox.leaseTtlMs * 2, opts.signal);
    return lease;
  }

  private value(): LeaseValue {
    const v: LeaseValue = { holder: this.holder, label: this.label, until: Date.now() + this.ctx.config.inbox.leaseTtlMs };
    // Counted from before the write, so the local view never outlives what contenders see.
    this.pendingUntil = v.until;
    return v;
  }

  private async take(waitMs: number, signal: AbortSignal | undefined): Promise<void> {
    // Answer liveness probes first, so a contender never sees us as dead while we hold the lease.
    this.alive = this.ctx.nc.subscribe(this.ctx.names.aliveSubject(this.session.instance, this.holder), {
      callback: (_err, msg) => {
        // Answer only a process of this instance (its own inbox prefix): an answer to any other
        // reply subject (say `$JS.API.STREAM.PURGE...`) would be an action taken on someone
        // else's behalf.
        if (msg.reply?.startsWith(`${this.ctx.inboxPrefix}.`)) msg.respond();
      },
    });
    const deadline = Date.now() + waitMs;
    let lastHolder = "unknown";
    for (;;) {
      signal?.throwIfAborted();
      const current = await this.store.read(this.key);
      if (current.status === "absent") {
        if (await this.tryCreate()) return this.started(false);
        continue;
      }
      // An unreadable lease (a later version's, or garbage) cannot protect anyone: take it over.
      const lease = current.status === "value" ? current.value : undefined;
      lastHolder = lease?.label ?? "an unreadable lease";
      if (lease === undefined || lease.until < Date.now() || !(await this.holderAlive(lease.holder))) {
        if (await this.tryReplace(current.revision)) return this.started(true);
        continue;
      }
      const remaining = deadline - Date.now();
      if (remaining <= 0) {
        this.stopAnswering();
        throw new SessionBusyError(sessionKeyOf(this.session), lastHolder);
      }
      await this.waitForChange(current.revision, Math.min(remaining, Math.max(lease.until - Date.now(), 1)), signal);
    }
  }

  private async tryCreate(): Promise<boolean> {
    const written = await this.store.create(this.key, this.value());
    return this.took(written?.revision);
  }

  private async tryReplace(revision: number): Promise<boolean> {
    const written = await this.store.replace({ key: this.key, revision }, this.value());
    return this.took(written?.revision);
  }

  private took(revision: number | undefined): boolean {
    if (revision === undefined) return false;
    this.revision = revision;
    this.validUntil = this.pendingUntil;
    return true;
  }

  private holderAlive(holder: string): Promise<boolean> {
    return holderAlive(this.ctx, this.session.instance, holder);
  }

  /**
   * Wake when the lease key changes (release, renewal, takeover) or after `ms`, whichever is first.
   * A core subscription on the key's subject sees every write to it: no server consumer is made
   * for a wait.
   */
  private async waitForChange(revision: number, ms: number, signal: AbortSignal | undefined): Promise<void> {
    let wake: () => void = () => {};
    const woken = new Promise<void>((resolve) => (wake = resolve));
    const sub = this.ctx.nc.subscribe(this.ctx.names.leaseKeySubject(this.session), { max: 1, callback: () => wake() });
    const timer = setTimeout(() => wake(), ms);
    signal?.addEventListener("abort", wake, { once: true });
    try {
      await this.ctx.nc.flush();
      // Covers a change that happened between our read and the subscription starting.
      const now = await this.store.read(this.key);
      if (now.status === "absent" || now.revision !== revision) return;
      await woken;
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener("abort", wake);
      sub.unsubscribe();
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
    if (!this.took((await this.store.replace({ key: this.key, revision: this.revision }, this.value()))?.revision)) {
      this.lost = true;
      this.stop();
      throw new LeaseLostError(sessionKeyOf(this.session));
    }
  }

  get held(): boolean {
    return !this.lost;
  }

  async release(): Promise<void> {
    this.stop();
    if (this.lost) return;
    this.lost = true;
    const deleted = await this.store.delete(this.key, this.revision).catch((err: unknown) => {
      this.ctx.logger.debug({ err, session: sessionKeyOf(this.session) }, "could not release the lease; it expires by itself");
      return true;
    });
    if (!deleted) this.ctx.logger.debug({ session: sessionKeyOf(this.session) }, "lease already taken over at release");
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
    return !isNoResponders(err);
  }
}

/** The lease currently recorded for a session, if any (an unreadable one counts as none). */
export async function readLease(store: LeaseStore, ctx: MeshContext, session: SessionAddress): Promise<{ holder: string; until: number } | undefined> {
  const r = await store.read(ctx.names.leaseKey(session));
  return r.status === "value" ? r.value : undefined;
}

const DedupSecretSchema = z.object({ v: z.literal(1), secret: z.string().min(16) });
/** Key of the instance's publish-dedup secret in its lease bucket (no session path has one token). */
const DEDUP_SECRET_KEY = "_dedup-secret";

/**
 * Load (or create) the instance's secret for publish dedup ids, kept in its own lease bucket: under
 * the generated permissions only the instance's own processes can read it. Without it (the bucket
 * cannot be read), publishes use the bare envelope id.
 */
export async function loadDedupSecret(ctx: MeshContext): Promise<void> {
  try {
    const store = await KvStore.open(ctx, ctx.names.leaseBucket(ctx.config.instance), DedupSecretSchema);
    const existing = await store.get(DEDUP_SECRET_KEY);
    const secret = existing?.value.secret ?? (await store.create(DEDUP_SECRET_KEY, { v: 1, secret: randomUUID() + randomUUID() }))?.value.secret ?? (await store.get(DEDUP_SECRET_KEY))?.value.secret;
    if (secret !== undefined) ctx.dedup.secret = secret;
  } catch (err) {
    ctx.logger.warn({ err }, "could not load the instance's publish dedup secret; publishing with bare envelope ids");
  }
}
