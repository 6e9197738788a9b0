/** A turn's end closes the session's run: the lease is released and the registry records how it went. */
import type { TurnOutcome } from "../wire/index.js";
import type { PluginConfig } from "./config.js";
import type { AgentEndEvent, PluginApi } from "./host-types.js";
import type { MeshRuntime } from "./runtime.js";
import { lastAssistantMessage } from "./transcript.js";

/** OpenClaw's run outcomes (as `subagent_ended` names them, and `agent_end` where it says) onto `lastTurn.outcome`. */
const RUN_OUTCOMES: Readonly<Record<string, TurnOutcome>> = { ok: "ok", done: "ok", error: "error", failed: "error", timeout: "timeout", killed: "interrupted", aborted: "interrupted" };

/** The last assistant message of the attempt (`stopReason`, `errorMessage` as OpenClaw's transcript has them). */
const lastAssistant = (event: AgentEndEvent) => lastAssistantMessage(event.messages);

/**
 * How a turn went: an outcome OpenClaw names wins (a timed-out run is `timeout`, not an error),
 * then a timeout (a `timedOut` flag, or, as openclaw 2026.9.x reports it, a run that ended
 * unsuccessfully with no error after its model call timed out: the run timer aborts the attempt, so
 * `agent_end` says only `success: false`), then the attempt's last assistant message (2026.9.x
 * reports an attempt whose provider call failed, 500 or 429, as `success: true` with that message's
 * `stopReason: "error"`; it is retried or failed over as a new attempt), then success, then an
 * error; a run that ended otherwise was interrupted.
 */
export function turnOutcomeOf(event: AgentEndEvent, modelCallTimedOut = false): TurnOutcome {
  const named = event.outcome !== undefined ? RUN_OUTCOMES[event.outcome.toLowerCase()] : undefined;
  if (named) return named;
  if (event.timedOut === true) return "timeout";
  if (event.success !== true && !event.error && modelCallTimedOut) return "timeout";
  const stop = lastAssistant(event)?.stopReason;
  if (stop === "error") return "error";
  if (stop === "aborted") return "interrupted";
  if (event.success) return "ok";
  return event.error ? "error" : "interrupted";
}

/** The error text a turn's record keeps: the event's, else the failed assistant message's. */
function turnErrorOf(event: AgentEndEvent): string | undefined {
  if (event.error) return event.error;
  const m = lastAssistant(event);
  return m?.stopReason === "error" && typeof m.errorMessage === "string" && m.errorMessage ? m.errorMessage : undefined;
}

export function install(api: PluginApi, runtime: MeshRuntime, _config: PluginConfig): void {
  /** Per session key, the run whose latest model call ended in a timeout (`failureKind: "timeout"`). */
  const timedOutCalls = new Map<string, string | undefined>();
  api.on("model_call_ended", (event, ctx) => {
    const sessionKey = event.sessionKey ?? ctx.sessionKey;
    if (!sessionKey) return;
    if (event.outcome === "error" && event.failureKind === "timeout") timedOutCalls.set(sessionKey, event.runId ?? ctx.runId);
    else timedOutCalls.delete(sessionKey);
  });
  api.on("agent_end", async (event, ctx) => {
    if (!ctx.sessionKey) return;
    const runId = event.runId ?? ctx.runId;
    const timedOutRun = timedOutCalls.has(ctx.sessionKey) ? timedOutCalls.get(ctx.sessionKey) : null;
    timedOutCalls.delete(ctx.sessionKey);
    const modelCallTimedOut = timedOutRun !== null && (timedOutRun === undefined || runId === undefined || timedOutRun === runId);
    const outcome = turnOutcomeOf(event, modelCallTimedOut);
    const error = turnErrorOf(event);
    await runtime.endRun(ctx.sessionKey, { outcome, ...(error && { error }) }).catch(() => undefined);
  });
}
