/**
 * Pending messages surfaced into turns: what arrived for a session is prepended to the prompt at
 * the start of its next turn and, mid-turn, appended to the result of whichever tool ran (any tool,
 * not only the mesh's), which is what the turn's next model request is built from. A block is
 * confirmed only after a model call that carried it succeeded; until then every retry of the turn
 * carries it again (surfaced-blocks.ts).
 */
import { formatMessage } from "../tools/index.js";
import type { InboxBatch } from "../inbox/index.js";
import type { MeshSession } from "../session/index.js";
import type { PluginConfig } from "./config.js";
import type { PluginApi } from "./host-types.js";
import type { MeshRuntime } from "./runtime.js";

/**
 * Take the session's pending messages and make the block a model request shows them in. Nothing is
 * confirmed here: the batch stays held (the inbox keeps it alive) until a model call that carried
 * it has succeeded (see surfaced-blocks.ts).
 */
export async function takePending(run: MeshSession): Promise<{ batch: InboxBatch; block: string } | undefined> {
  const batch = await run.take({ max: 50 });
  if (batch.messages.length === 0) return undefined;
  const lines = batch.messages.map((m) => `[mesh id=${m.id}] ${formatMessage(m)}`);
  const block = [
    "<clawmesh-inbox>",
    "Delivered to this session through clawmesh since you last looked (each is shown once):",
    ...lines,
    "</clawmesh-inbox>",
  ].join("\n");
  return { batch, block };
}

export function install(api: PluginApi, runtime: MeshRuntime, _config: PluginConfig): void {
  api.on("before_prompt_build", async (_event, ctx) => {
    const sessionKey = ctx.sessionKey;
    if (!sessionKey) return;
    try {
      const block = await runtime.surfaced.forPrompt(sessionKey, ctx.runId, async () => takePending(await runtime.runFor(sessionKey)));
      return block ? { prependContext: block } : undefined;
    } catch (err) {
      api.logger.warn(`clawmesh: could not surface pending messages for ${sessionKey}: ${String(err)}`);
      return undefined;
    }
  });

  // Which model calls carried a held block, and how they ended (OpenClaw fires these without waiting).
  api.on("model_call_started", (event, ctx) => {
    const sessionKey = event.sessionKey ?? ctx.sessionKey;
    if (sessionKey) runtime.surfaced.callStarted(sessionKey, event.callId, event.runId ?? ctx.runId);
  });
  api.on("model_call_ended", (event, ctx) => {
    const sessionKey = event.sessionKey ?? ctx.sessionKey;
    if (sessionKey) runtime.surfaced.callEnded(sessionKey, event.callId, event.outcome === "completed");
  });

  // Only sessions whose run is already open: a tool result is no reason to take a session's lease.
  api.registerAgentToolResultMiddleware?.(
    async (event, ctx) => {
      const sessionKey = ctx.sessionKey;
      if (!sessionKey || !runtime.hasRun(sessionKey)) return undefined;
      try {
        const block = await runtime.surfaced.forToolResult(sessionKey, ctx.runId, async () => takePending(await runtime.runFor(sessionKey)));
        if (!block) return undefined;
        return { result: { ...event.result, content: [...event.result.content, { type: "text", text: block }] } };
      } catch (err) {
        api.logger.warn(`clawmesh: could not surface pending messages after ${event.toolName}: ${String(err)}`);
        return undefined;
      }
    },
    { runtimes: ["openclaw"] },
  );
}
