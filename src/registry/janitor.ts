/**
 * The liveness rule for `active`: a session is active while a run holds its inbox lease. The
 * janitor checks the active records of its own instance only (the only leases it can read under
 * the generated authorization, and the only records it may write): when the session's lease is
 * gone, has expired, or its holder does not answer on its liveness subject (the process died, so
 * the server dropped its subscription), it moves the record `active -> idle` by compare-and-set,
 * with `lastTurn: interrupted`. It never closes a session: a crash makes a session idle and
 * resumable, not dead. It also re-fires close watches a crash left unfired. One failing record is
 * logged and skipped; the sweep goes on.
 *
 * It runs where an instance lives for long (a gateway, `clawmesh start`), started explicitly,
 * never by a one-shot client.
 */
import type { MeshContext } from "../mesh-context.js";
import { holderAlive, openLeaseStore, readLease, type LeaseStore } from "../inbox/index.js";
import type { SessionRecord } from "../wire/index.js";
import type { SessionRegistry } from "./sessions.js";

export class Janitor {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> | undefined;
  /** This instance's lease bucket, opened once. */
  private leases: Promise<LeaseStore> | undefined;

  constructor(
    private readonly ctx: MeshContext,
    private readonly sessions: SessionRegistry,
  ) {}

  get started(): boolean {
    return this.timer !== undefined;
  }

  start(intervalMs: number): void {
    if (intervalMs <= 0 || this.timer) return;
    this.timer = setInterval(() => {
      this.running ??= this.sweep()
        .catch((err: unknown) => this.ctx.logger.warn({ err }, "registry sweep failed"))
        .finally(() => (this.running = undefined));
    }, intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
  }

  /** One pass over this instance's sessions; returns the session keys it moved to idle. */
  async sweep(): Promise<string[]> {
    const instance = this.ctx.config.instance;
    this.leases ??= openLeaseStore(this.ctx, instance);
    const leases = await this.leases.catch((err: unknown) => {
      this.leases = undefined;
      throw err;
    });
    const idled: string[] = [];
    for (const { key, value: r } of await this.sessions.bucket.values(`${instance}.>`)) {
      try {
        if (r.lifecycle === "active" && !(await this.runAlive(leases, r))) {
          if (await this.idle(key, r)) idled.push(r.sessionKey);
        } else if (r.lifecycle === "closed" && !r.closeNotified) {
          await this.sessions.notifyClosed({ ...r.address });
        }
      } catch (err) {
        this.ctx.logger.warn({ err, session: r.sessionKey }, "janitor could not check a session; going on with the rest");
      }
    }
    return idled;
  }

  private async idle(key: string, r: SessionRecord): Promise<boolean> {
    const moved = await this.sessions.bucket.update(key, (cur) => {
      if (!cur || cur.lifecycle !== "active" || cur.holder !== r.holder) return undefined;
      const { holder: _h, ...rest } = cur;
      const now = new Date().toISOString();
      return { ...rest, lifecycle: "idle", resumable: true, idleReason: "its run's process went away", lastTurn: { outcome: "interrupted", at: now }, lastActivity: now };
    });
    if (moved?.value.lifecycle !== "idle") return false;
    this.ctx.logger.info({ session: r.sessionKey }, "session marked idle: its run is gone");
    return true;
  }

  private async runAlive(leases: LeaseStore, r: SessionRecord): Promise<boolean> {
    const lease = await readLease(leases, this.ctx, { ...r.address });
    if (!lease || lease.until < Date.now()) return false;
    // Whoever holds the lease now (this run, or a newer one about to record itself) must be alive.
    return holderAlive(this.ctx, r.owner, lease.holder);
  }
}
