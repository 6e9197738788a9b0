/**
 * The block of pending messages a session's turn is showing its model, kept until a model call
 * that carried it has succeeded. OpenClaw builds the prompt once per attempt and retries an attempt
 * whose provider call failed (500, 429, 503, a failover) with a fresh build: the retry must carry
 * the same block, and nothing is confirmed before a call that carried it came back.
 *
 * Per session key, at most one block is held (the inbox hands out one batch at a time):
 *
 * - it is made from a batch taken at prompt build, or at a tool result mid-turn;
 * - each model call of the run that shows it, started while it is held, carries it
 *   (`model_call_started`, by call id); calls of other runs of the session (a compaction's, say)
 *   do not;
 * - a call that carried it and completed confirms the batch (`model_call_ended`, outcome
 *   `completed`); a failed call leaves it held, and the retry's prompt build returns it again;
 * - a tool result proves the call that asked for the tool completed: a block that call carried
 *   is confirmed there too (the model-call hooks are fire-and-forget and may come late);
 * - a turn that ended successfully confirms a block a call carried (or, on a host that never
 *   reported model calls, any block it showed); any other end leaves it unconfirmed, and closing
 *   the run gives the batch back to the inbox, which offers it to the next turn.
 *
 * A crash while a block is held confirms nothing: the inbox offers the messages again.
 */
import type { InboxBatch } from "../inbox/index.js";
import type { HostLogger } from "./host-types.js";

/** A block shown and not confirmed yet. */
interface Held {
  readonly batch: InboxBatch;
  readonly block: string;
  /** Where it was shown: the turn's prompt, or a tool result (then only calls started after carry it). */
  readonly via: "prompt" | "tool";
  /** The run whose prompt or tool result shows it (the latest prompt build that returned it). */
  runId: string | undefined;
  /** Model calls started while it was held and not reported as failed. */
  readonly calls: Set<string>;
}

interface Turn {
  held: Held | undefined;
  /** The last confirm: the next take waits for it (the inbox hands out one batch at a time). */
  confirming: Promise<void>;
  /** Prompt builds and tool results of one session, one at a time. */
  queue: Promise<unknown>;
}

/** Take the session's pending messages: the batch and the block that shows them, or nothing pending. */
export type Take = () => Promise<{ batch: InboxBatch; block: string } | undefined>;

export class SurfacedBlocks {
  private readonly turns = new Map<string, Turn>();
  /** The host reports model calls (`model_call_started`): confirm on their success, not on the turn's. */
  private modelCallsReported = false;

  constructor(private readonly logger: HostLogger) {}

  private turn(sessionKey: string): Turn {
    let t = this.turns.get(sessionKey);
    if (!t) {
      t = { held: undefined, confirming: Promise.resolve(), queue: Promise.resolve() };
      this.turns.set(sessionKey, t);
    }
    return t;
  }

  private serial<T>(t: Turn, fn: () => Promise<T>): Promise<T> {
    const run = t.queue.then(fn, fn);
    t.queue = run.catch(() => undefined);
    return run;
  }

  private confirm(sessionKey: string, t: Turn): void {
    const held = t.held;
    if (!held) return;
    t.held = undefined;
    t.confirming = held.batch.confirm().catch((err: unknown) => {
      this.logger.warn(`clawmesh: could not confirm the messages surfaced to ${sessionKey}; they will be shown again: ${String(err)}`);
    });
  }

  private async takeBlock(t: Turn, via: Held["via"], runId: string | undefined, take: Take): Promise<string | undefined> {
    await t.confirming;
    const taken = await take();
    if (!taken) return undefined;
    t.held = { ...taken, via, runId, calls: new Set() };
    return taken.block;
  }

  /** The block for a prompt build: the one still held (a retry of the same turn), or a fresh one. */
  forPrompt(sessionKey: string, runId: string | undefined, take: Take): Promise<string | undefined> {
    const t = this.turn(sessionKey);
    return this.serial(t, async () => {
      if (!t.held) return this.takeBlock(t, "prompt", runId, take);
      t.held.runId = runId ?? t.held.runId;
      return t.held.block;
    });
  }

  /**
   * The block to append to a tool result, if any. The call that asked for this tool completed, so
   * a block it carried is confirmed first; a block shown in a sibling tool result (no call carried
   * it yet) stays held and nothing more is taken.
   */
  forToolResult(sessionKey: string, runId: string | undefined, take: Take): Promise<string | undefined> {
    const t = this.turn(sessionKey);
    return this.serial(t, async () => {
      const held = t.held;
      if (held) {
        if (held.via === "tool" && held.calls.size === 0) return undefined;
        this.confirm(sessionKey, t);
      }
      return this.takeBlock(t, "tool", runId, take);
    });
  }

  /** A model call of the session started: when it belongs to the run showing the held block, it carries it. */
  callStarted(sessionKey: string, callId: string, runId: string | undefined): void {
    this.modelCallsReported = true;
    const held = this.turns.get(sessionKey)?.held;
    if (!held) return;
    if (held.runId !== undefined && runId !== undefined && held.runId !== runId) return;
    held.calls.add(callId);
  }

  /** A model call ended: a completed call that carried the held block confirms it; a failed one does not. */
  callEnded(sessionKey: string, callId: string, completed: boolean): void {
    const t = this.turns.get(sessionKey);
    if (!t?.held?.calls.has(callId)) return;
    if (completed) this.confirm(sessionKey, t);
    else t.held.calls.delete(callId);
  }

  /**
   * The session's turn ended. A successful turn confirms a block a model call carried (a late
   * `model_call_ended`), or any block it showed when the host reports no model calls. Whatever
   * stays held is returned unconfirmed: closing the run gives it back to the inbox.
   */
  async turnEnded(sessionKey: string, success: boolean): Promise<void> {
    const t = this.turns.get(sessionKey);
    if (!t) return;
    await t.queue;
    if (success && t.held && (t.held.calls.size > 0 || !this.modelCallsReported)) this.confirm(sessionKey, t);
    this.turns.delete(sessionKey);
    await t.confirming;
  }
}
