/** A turn's end closes the session's run: the lease is released and the registry records how it went. */
import type { TurnOutcome } from "../wire/index.js";
import type { PluginConfig } from "./config.js";
import type { AgentEndEvent, PluginApi } from "./host-types.js";
import type { MeshRuntime } from "./runtime.js";

/** OpenClaw's run outcomes (as `subagent_ended` names them, and `agent_end` where it says) onto `lastTurn.outcome`. */
const RUN_OUTCOMES: Readonly<Record<string, TurnOutcome>> = { ok: "ok", done: "ok", error: "error", failed: "error", timeout: "timeout", killed: "interrupted", aborted: "interrupted" };

/**
 * How a turn went: an outcome OpenClaw names wins (a timed-out run is `timeout`, not an error),
 * then a `timedOut` flag, then success, then an error; a run that ended otherwise was interrupted.
 */
export function turnOutcomeOf(event: AgentEndEvent): TurnOutcome {
  const named = event.outcome !== undefined ? RUN_OUTCOMES[event.outcome.toLowerCase()] : undefined;
  if (named) return named;
  if (event.timedOut === true) return "timeout";
  if (event.success) return "ok";
  return event.error ? "error" : "interrupted";
}

export function install(api: PluginApi, runtime: MeshRuntime, _config: PluginConfig): void {
  api.on("agent_end", async (event, ctx) => {
    if (!ctx.sessionKey) return;
    const outcome = turnOutcomeOf(event);
    await runtime.endRun(ctx.sessionKey, { outcome, ...(event.error && { error: event.error }) }).catch(() => undefined);
  });
}
