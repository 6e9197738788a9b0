/**
 * Wake on delivery: when something of a waking kind arrives for a session of this gateway that is
 * not running a turn, start one (through the host's seam, wake-seam.ts), so the session's next
 * prompt build shows it (surfacing.ts). A running turn is never competed with: it sees arrivals
 * mid-turn, at its next tool result, and its end looks again.
 *
 * Per session, at most one wake at a time, and bursts coalesce: arrivals only mark the session
 * as worth a look; the look (a peek: the seen log and direct gets, no consumer, no lease) decides
 * whether anything a turn would show is pending, and one wake covers all of it. Per agent, one
 * wake at a time as well: OpenClaw declines a heartbeat while any run of the agent is active.
 *
 * After a wake the session is looked at again once its turn has ended: what arrived after the
 * turn's prompt was built, or a block the turn failed to get through, wakes it again. A session
 * whose wakes show nothing (the first pending message stays the same after `maxFruitless` wakes)
 * is left alone until something new arrives, so a host that cannot show it is not woken forever.
 */
import { sessionKeyOf, type SessionAddress } from "../address/index.js";
import type { HostLogger } from "./host-types.js";
import type { WakeOutcome, WakeSeam } from "./wake-seam.js";

export interface WakeTiming {
  /** How long arrivals gather before the first look (a burst becomes one wake). */
  readonly coalesceMs: number;
  /** First and longest delay before trying again after a declined or failed wake. */
  readonly retryMinMs: number;
  readonly retryMaxMs: number;
  /** How long a requested (scheduler) wake may take to turn into a turn before looking again. */
  readonly requestedSettleMs: number;
  /** Wakes in a row that leave the first pending message in place before giving up on it. */
  readonly maxFruitless: number;
}

const DEFAULT_TIMING: WakeTiming = { coalesceMs: 200, retryMinMs: 1000, retryMaxMs: 60_000, requestedSettleMs: 60_000, maxFruitless: 3 };

/** Reasons OpenClaw declines a heartbeat that pass on their own (busy, rate limits). */
const PASSING_DECLINES: ReadonlySet<string> = new Set(["requests-in-flight", "cron-in-progress", "preempted", "min-spacing", "flood", "not-due", "agent-runner-cancelled"]);

export interface WakerDeps {
  readonly seam: WakeSeam;
  /** Whether the session is running a turn (the plugin holds its run). */
  isRunning(session: SessionAddress): boolean;
  /**
   * Stream sequence of the first pending message the session's next turn would show, among those
   * of a waking kind; undefined when there is none.
   */
  firstPending(session: SessionAddress): Promise<number | undefined>;
  readonly logger: HostLogger;
  readonly timing?: Partial<WakeTiming>;
}

interface SessionState {
  readonly address: SessionAddress;
  readonly key: string;
  /** Something may be pending: look when the session and its agent are free. */
  due: boolean;
  /** A look or a wake is under way. */
  busy: boolean;
  timer: NodeJS.Timeout | undefined;
  /** The timer is only a fallback: a turn of the agent ending looks at once. */
  retryOnTurnEnd: boolean;
  /** Declined or failed wakes in a row (for the delay). */
  misses: number;
  /** The first pending message when the last wake was made, and wakes in a row that left it there. */
  wokeFor: number | undefined;
  fruitless: number;
  /** Waited after a fruitless wake: the next look wakes again. */
  backedOff: boolean;
}

export class Waker {
  private readonly timing: WakeTiming;
  private readonly sessions = new Map<string, SessionState>();
  /** Agents with a look or wake under way. */
  private readonly agentsBusy = new Set<string>();
  private readonly warned = new Set<string>();
  private readonly idleWaiters: (() => void)[] = [];
  private stopped = false;

  constructor(private readonly deps: WakerDeps) {
    this.timing = { ...DEFAULT_TIMING, ...deps.timing };
  }

  /** Something that wakes arrived for `session` (or may be pending there, at start). */
  arrived(session: SessionAddress): void {
    if (this.stopped) return;
    // OpenClaw runs a heartbeat for a sub-agent's key in the agent's main session instead.
    if (session.channel === "subagent") {
      this.deps.logger.debug?.(`clawmesh: ${sessionKeyOf(session)} is a sub-agent session, which OpenClaw cannot wake; it sees its messages at its next turn`);
      return;
    }
    const s = this.state(session);
    s.due = true;
    s.fruitless = 0;
    s.wokeFor = undefined;
    s.backedOff = false;
    if (!s.busy && !s.timer) this.later(s, this.timing.coalesceMs, false);
  }

  /** A turn of `session` ended (its run is closed): look at it, and at its agent's sessions kept waiting. */
  turnEnded(session: SessionAddress): void {
    if (this.stopped) return;
    for (const s of this.sessions.values()) {
      if (s.address.agent !== session.agent) continue;
      if (s.timer && s.retryOnTurnEnd) {
        clearTimeout(s.timer);
        s.timer = undefined;
      }
      this.kick(s);
    }
  }

  stop(): void {
    this.stopped = true;
    for (const s of this.sessions.values()) if (s.timer) clearTimeout(s.timer);
    this.sessions.clear();
    this.notifyIfIdle();
  }

  /** Resolves once no session has a look or a wake due, waiting or under way (at once if none has). */
  whenIdle(): Promise<void> {
    if (this.sessions.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private notifyIfIdle(): void {
    if (this.sessions.size > 0) return;
    for (const resolve of this.idleWaiters.splice(0)) resolve();
  }

  private state(session: SessionAddress): SessionState {
    const key = sessionKeyOf(session);
    let s = this.sessions.get(key);
    if (!s) {
      s = { address: session, key, due: false, busy: false, timer: undefined, retryOnTurnEnd: false, misses: 0, wokeFor: undefined, fruitless: 0, backedOff: false };
      this.sessions.set(key, s);
    }
    return s;
  }

  private later(s: SessionState, ms: number, retryOnTurnEnd: boolean): void {
    if (this.stopped) return;
    if (s.timer) clearTimeout(s.timer);
    s.retryOnTurnEnd = retryOnTurnEnd;
    s.timer = setTimeout(() => {
      s.timer = undefined;
      this.kick(s);
    }, ms);
    // A pending wake alone is no reason to keep the process alive.
    s.timer.unref();
  }

  private kick(s: SessionState): void {
    if (this.stopped || s.busy || s.timer) return;
    if (!s.due) {
      this.sessions.delete(s.key);
      this.notifyIfIdle();
      return;
    }
    // A running turn sees arrivals mid-turn; its end looks again (turnEnded).
    if (this.deps.isRunning(s.address)) {
      this.deps.logger.debug?.(`clawmesh: ${s.key} is running a turn: no wake, it sees what arrived mid-turn`);
      return;
    }
    if (this.agentsBusy.has(s.address.agent)) return;
    s.busy = true;
    this.agentsBusy.add(s.address.agent);
    void this.attempt(s)
      .catch((err: unknown) => {
        s.due = true;
        this.miss(s, `unexpected: ${String(err)}`, undefined, false);
      })
      .finally(() => {
        s.busy = false;
        this.agentsBusy.delete(s.address.agent);
        for (const other of [...this.sessions.values()]) if (other.address.agent === s.address.agent) this.kick(other);
      });
  }

  private async attempt(s: SessionState): Promise<void> {
    s.due = false;
    let head: number | undefined;
    try {
      head = await this.deps.firstPending(s.address);
    } catch (err) {
      s.due = true;
      this.miss(s, `could not read what is pending: ${String(err)}`, undefined, false);
      return;
    }
    if (head === undefined) return;
    if (head === s.wokeFor && !s.backedOff) {
      // The last wake left the first pending message in place: wait a little, then try again.
      s.fruitless++;
      if (s.fruitless >= this.timing.maxFruitless) {
        this.deps.logger.warn(
          `clawmesh: woke ${s.key} ${s.fruitless} times but its first pending message (stream sequence ${head}) was not shown; not waking it again until something new arrives (it is shown at its next turn)`,
        );
        return;
      }
      s.backedOff = true;
      s.due = true;
      this.later(s, this.delay(s.fruitless), false);
      return;
    }
    s.backedOff = false;
    if (head !== s.wokeFor) s.fruitless = 0;
    const outcome = await this.deps.seam.wake(s.key, s.address.agent);
    this.settle(s, head, outcome);
  }

  private settle(s: SessionState, head: number, outcome: WakeOutcome): void {
    if (this.stopped) return;
    switch (outcome.kind) {
      case "ran":
      case "requested":
        this.deps.logger.info(`clawmesh: started a turn for ${s.key} (messages were pending and it was not running one)`);
        s.misses = 0;
        s.wokeFor = head;
        // Look again once its turn has ended: arrivals after its prompt, or a block it did not get through.
        s.due = true;
        if (outcome.kind === "requested") this.later(s, this.timing.requestedSettleMs, true);
        return;
      case "declined":
        s.due = true;
        this.miss(s, `OpenClaw declined the turn (${outcome.reason})`, outcome.retryAtMs, PASSING_DECLINES.has(outcome.reason));
        return;
      case "failed":
        s.due = true;
        this.miss(s, `the turn failed (${outcome.reason})`, undefined, false);
        return;
    }
  }

  private miss(s: SessionState, why: string, retryAtMs: number | undefined, passing: boolean): void {
    // A look cut short by the gateway stopping is no failure worth a line.
    if (this.stopped) return;
    s.misses++;
    const ms = retryAtMs !== undefined ? Math.max(this.timing.retryMinMs, retryAtMs - Date.now()) : this.delay(s.misses);
    if (passing) this.deps.logger.debug?.(`clawmesh: waking ${s.key} later: ${why}`);
    else this.warnOnce(why, `clawmesh: could not start a turn for ${s.key}: ${why}; trying again in ${Math.round(ms / 1000)} s`);
    this.later(s, ms, passing);
  }

  private delay(n: number): number {
    return Math.min(this.timing.retryMaxMs, this.timing.retryMinMs * 2 ** Math.max(0, n - 1));
  }

  private warnOnce(reason: string, line: string): void {
    if (this.warned.has(reason)) {
      this.deps.logger.debug?.(line);
      return;
    }
    this.warned.add(reason);
    this.deps.logger.warn(line);
  }
}
