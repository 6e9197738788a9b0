/**
 * Completions of spawned children that could not be published yet (the NATS connection was down or
 * being re-established when the child ended). With the native announce switched off, the mesh is the
 * only way a child's result reaches its parent, so a completion is kept and retried until it is
 * published: at once when the connection comes back, otherwise on a timer with growing delays.
 *
 * The queue lives in memory only: a gateway that crashes or is killed while completions wait here
 * loses them (the parent can still ask the child's transcript; `mesh_await` on the child's key keeps
 * waiting). At a clean stop the queue gets one last attempt, and what is left is logged by key.
 *
 * Retrying is safe: publishing a child's end is idempotent (a fixed task id and completion envelope
 * id per child), so a completion published by an attempt whose answer was lost is not stored twice.
 */
import { MeshError, describe } from "../errors.js";
import type { HostLogger } from "./host-types.js";

export interface ChildCompletion {
  readonly parent: string;
  readonly child: string;
  readonly state: "completed" | "failed";
  readonly result?: string;
  readonly error?: string;
}

export interface RetryDelays {
  readonly firstMs: number;
  readonly maxMs: number;
}

const DEFAULT_DELAYS: RetryDelays = { firstMs: 1000, maxMs: 60_000 };

/**
 * Failures no later attempt can change: the completion itself is unpublishable (a malformed key,
 * a reply over the size limit, a topology the mesh refuses to use). Everything else, including
 * errors of the NATS client itself, is taken to be the connection's and is retried.
 */
const FINAL_CODES: ReadonlySet<string> = new Set(["invalid_address", "invalid_input", "payload_too_large", "topology_conflict", "feature_unavailable"]);

export function isWorthRetrying(err: unknown): boolean {
  return !(err instanceof MeshError && FINAL_CODES.has(err.code));
}

/** Why an attempt failed, for the operator: the mesh's code (its messages are worded for the model). */
function reasonOf(err: unknown): string {
  return err instanceof MeshError ? err.code : describe(err);
}

/** Why a completion is dropped: the code and what it says (mesh errors name ids and sizes, never bodies). */
function finalReasonOf(err: unknown): string {
  return err instanceof MeshError ? `${err.code}: ${err.message}` : describe(err);
}

interface Waiting {
  readonly completion: ChildCompletion;
  attempts: number;
}

export class PendingCompletions {
  /** Keyed by child session key: a child ends once, and the mesh keeps its first completion. */
  private readonly waiting = new Map<string, Waiting>();
  private delayMs: number;
  private timer: NodeJS.Timeout | undefined;
  private round: Promise<void> | undefined;
  private roundAgain = false;
  private readonly emptied: (() => void)[] = [];
  /** Set while stop() runs, so nothing it has cancelled is scheduled again behind its back. */
  private stopping = false;

  constructor(
    private readonly publish: (c: ChildCompletion) => Promise<void>,
    private readonly logger: HostLogger,
    private readonly delays: RetryDelays = DEFAULT_DELAYS,
  ) {
    this.delayMs = delays.firstMs;
  }

  get size(): number {
    return this.waiting.size;
  }

  /** Publish a child's completion now, or keep it for a retry when that fails for a passing reason. */
  async submit(c: ChildCompletion): Promise<void> {
    if (this.waiting.has(c.child)) {
      this.logger.info(`clawmesh: the completion of ${c.child} is already waiting to be published; this later one is dropped`);
      return;
    }
    try {
      await this.publish(c);
    } catch (err) {
      if (!isWorthRetrying(err)) {
        this.logger.error(`clawmesh: the completion of ${c.child} for ${c.parent} cannot be published and is dropped (${finalReasonOf(err)})`);
        return;
      }
      this.waiting.set(c.child, { completion: c, attempts: 1 });
      this.logger.warn(
        `clawmesh: could not publish the completion of ${c.child} for ${c.parent} (${reasonOf(err)}); kept in memory and retried until it is published (${this.waiting.size} waiting)`,
      );
      this.schedule();
    }
  }

  /** The connection is back: try everything waiting now, and start the delays over. */
  retryNow(): void {
    if (this.waiting.size === 0) return;
    this.delayMs = this.delays.firstMs;
    this.startRound();
  }

  /** Resolves when nothing is waiting (at once if nothing is). */
  whenEmpty(): Promise<void> {
    if (this.waiting.size === 0 && !this.round) return Promise.resolve();
    return new Promise((resolve) => this.emptied.push(resolve));
  }

  /**
   * Stop retrying. With `lastTry` (the connection is up), each waiting completion gets one more
   * attempt; whatever is still waiting afterwards is lost and logged by key.
   */
  async stop(opts: { lastTry: boolean }): Promise<void> {
    this.stopping = true;
    try {
      this.clearTimer();
      await this.round;
      if (opts.lastTry && this.waiting.size > 0) await this.attemptAll();
      if (this.waiting.size > 0) {
        const lost = [...this.waiting.values()].map((w) => `${w.completion.child} (for ${w.completion.parent})`);
        this.logger.error(`clawmesh: stopping with ${lost.length} child completion(s) never published; they are lost: ${lost.join(", ")}`);
        this.waiting.clear();
      }
    } finally {
      this.stopping = false;
      this.delayMs = this.delays.firstMs;
      this.notifyIfEmpty();
    }
  }

  private startRound(): void {
    if (this.stopping) return;
    if (this.round) {
      this.roundAgain = true;
      return;
    }
    this.clearTimer();
    this.round = this.attemptAll().finally(() => {
      this.round = undefined;
      if (this.roundAgain) {
        this.roundAgain = false;
        this.startRound();
        return;
      }
      this.schedule();
      this.notifyIfEmpty();
    });
  }

  /**
   * One attempt per waiting completion, oldest first. The first failure that looks like the
   * connection's ends the round: the others would only wait out the same timeouts.
   */
  private async attemptAll(): Promise<void> {
    for (const [child, w] of [...this.waiting]) {
      try {
        await this.publish(w.completion);
      } catch (err) {
        if (isWorthRetrying(err)) {
          w.attempts++;
          this.logger.debug?.(`clawmesh: the completion of ${child} is still not published (attempt ${w.attempts}: ${reasonOf(err)})`);
          this.delayMs = Math.min(this.delayMs * 2, this.delays.maxMs);
          return;
        }
        this.waiting.delete(child);
        this.logger.error(`clawmesh: the completion of ${child} for ${w.completion.parent} cannot be published and is dropped (${finalReasonOf(err)})`);
        continue;
      }
      this.waiting.delete(child);
      this.logger.info(`clawmesh: published the completion of ${child} for ${w.completion.parent} (attempt ${w.attempts + 1})`);
    }
  }

  private schedule(): void {
    if (this.waiting.size === 0 || this.timer || this.round || this.stopping) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.startRound();
    }, this.delayMs);
    // A retry alone is no reason to keep the process alive.
    this.timer.unref();
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private notifyIfEmpty(): void {
    if (this.waiting.size > 0 || this.round) return;
    for (const resolve of this.emptied.splice(0)) resolve();
  }
}
