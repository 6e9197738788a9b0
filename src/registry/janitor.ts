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
import type { KvStore, KvView } from "../topology/index.js";
import type { SessionRecord } from "../wire/index.js";
import type { SessionRegistry } from "./sessions.js";

export class Janitor {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> | undefined;
  /** This instance's lease bucket, opened once. */
  private leases: Promise<LeaseStore> | undefined;
  /** The first pass reads every record of the instance; later ones only its leases. */
  private fullPassDone = false;
  /** The lease bucket as of the last pass. */
  private leaseView: KvView<LeaseStore extends KvStore<infer S> ? S : never> | undefined;

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

  /**
   * One pass; returns the session keys it moved to idle. The first pass of a janitor reads every
   * record of this instance (it may start after a crash, or after a day without any janitor, when
   * a dead run's lease may have aged out of its bucket); later passes look only at the sessions
   * with a lease in the instance's lease bucket, read through a view that each pass brings up to
   * date with the lease writes since the last one (renewals, takeovers, releases). So a pass costs
   * what the running sessions wrote, not what the registry holds.
   */
  async sweep(): Promise<string[]> {
    this.leases ??= openLeaseStore(this.ctx, this.ctx.config.instance);
    const leases = await this.leases.catch((err: unknown) => {
      this.leases = undefined;
      throw err;
    });
    if (!this.fullPassDone) {
      const idled = await this.fullPass(leases);
      this.fullPassDone = true;
      return idled;
    }
    return this.leasePass(leases);
  }

  /** Every record of this instance: idle the active ones whose run is gone, re-fire unfired close watches. */
  private async fullPass(leases: LeaseStore): Promise<string[]> {
    const instance = this.ctx.config.instance;
    const idled: string[] = [];
    for (const { key, value: r } of await this.sessions.bucket.values(`${instance}.>`)) {
      try {
        if (r.lifecycle === "active" && !(await this.runAlive(await readLease(leases, this.ctx, { ...r.address }), r))) {
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

  /**
   * The sessions with a lease: a record whose run is gone goes idle, and a lease whose holder is
   * gone (expired, or no answer on its liveness subject) is deleted (at the revision read) once its
   * record is settled, so later passes skip it.
   */
  private async leasePass(leases: LeaseStore): Promise<string[]> {
    const instance = this.ctx.config.instance;
    this.leaseView ??= leases.view();
    await this.leaseView.refresh();
    // Lease keys are session paths; the bucket's own records (the dedup secret) start with "_".
    const held = this.leaseView.values().filter((l) => !l.key.startsWith("_"));
    const records = await this.sessions.bucket.readMany(held.map((l) => `${instance}.${l.key}`));
    const idled: string[] = [];
    for (let i = 0; i < held.length; i++) {
      const { key, value: lease, revision } = held[i]!;
      const rec = records[i]!;
      try {
        const holderGone = lease.until < Date.now() || !(await holderAlive(this.ctx, instance, lease.holder));
        if (rec.status === "value" && rec.value.lifecycle === "active" && (holderGone || !(await this.recordHolderAlive(lease, rec.value)))) {
          if (await this.idle(rec.key, rec.value)) idled.push(rec.value.sessionKey);
        }
        // A lease taken over since it was read has moved on: the delete at its old revision fails.
        if (holderGone) await leases.delete(key, revision);
      } catch (err) {
        this.ctx.logger.warn({ err, lease: key }, "janitor could not check a session; going on with the rest");
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

  /** The record's run still holds the session: its lease is current and its holder answers. */
  private async runAlive(lease: { holder: string; until: number } | undefined, r: SessionRecord): Promise<boolean> {
    if (!lease || lease.until < Date.now()) return false;
    // Whoever holds the lease now (this run, or a newer one about to record itself) must be alive.
    return (await holderAlive(this.ctx, r.owner, lease.holder)) && this.recordHolderAlive(lease, r);
  }

  /**
   * The lease is live, but the record may name an earlier run that lost it (say a plain inbox
   * reader took over from a crashed run): that run must answer too, or its record would stay
   * active once the reader releases the lease and no lease is left to find it by.
   */
  private async recordHolderAlive(lease: { holder: string }, r: SessionRecord): Promise<boolean> {
    if (r.holder === undefined || r.holder === lease.holder) return true;
    return holderAlive(this.ctx, r.owner, r.holder);
  }
}
