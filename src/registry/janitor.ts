/**
 * The liveness rule for `active`: a session is active while a run holds its inbox lease. The
 * janitor (run by every mesh client, every `janitorIntervalMs`) checks each active record: when the
 * session's lease is gone, has expired, or its holder does not answer on its liveness subject (the
 * process died, so the server dropped its subscription), it moves the record `active -> idle` by
 * compare-and-set, with `lastTurn: interrupted`. It never closes a session: a crash makes a session
 * idle and resumable, not dead. It also re-fires close watches a crash left unfired (own sessions).
 */
import type { MeshContext } from "../mesh-context.js";
import { holderAlive, readLease } from "../inbox/index.js";
import type { SessionRecord } from "../wire/index.js";
import type { SessionRegistry } from "./sessions.js";

export class Janitor {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> | undefined;

  constructor(
    private readonly ctx: MeshContext,
    private readonly sessions: SessionRegistry,
  ) {}

  start(intervalMs: number): void {
    if (intervalMs <= 0 || this.timer) return;
    this.timer = setInterval(() => {
      this.running ??= this.sweep()
        .catch((err: unknown) => this.ctx.logger.debug({ err }, "registry sweep failed"))
        .finally(() => (this.running = undefined));
    }, intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
  }

  /** One pass; returns the session keys it moved to idle. */
  async sweep(): Promise<string[]> {
    const idled: string[] = [];
    for (const { key, value: r } of await this.sessions.bucket.values()) {
      if (r.lifecycle === "active" && !(await this.runAlive(r))) {
        const moved = await this.sessions.bucket.update(key, (cur) => {
          if (!cur || cur.lifecycle !== "active" || cur.holder !== r.holder) return undefined;
          const { holder: _h, ...rest } = cur;
          const now = new Date().toISOString();
          return { ...rest, lifecycle: "idle", resumable: true, idleReason: "its run's process went away", lastTurn: { outcome: "interrupted", at: now }, lastActivity: now };
        });
        if (moved?.value.lifecycle === "idle") {
          idled.push(r.sessionKey);
          this.ctx.logger.info({ session: r.sessionKey, owner: r.owner }, "session marked idle: its run is gone");
        }
      } else if (r.lifecycle === "closed" && !r.closeNotified && r.owner === this.ctx.config.instance) {
        await this.sessions.notifyClosed({ ...r.address });
      }
    }
    return idled;
  }

  private async runAlive(r: SessionRecord): Promise<boolean> {
    const lease = await readLease(this.ctx, { ...r.address });
    if (!lease || lease.until < Date.now()) return false;
    // Whoever holds the lease now (this run, or a newer one about to record itself) must be alive.
    return holderAlive(this.ctx, r.owner, lease.holder);
  }
}
