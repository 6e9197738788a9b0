/**
 * Pending messages surfaced into turns: what arrived for a session is prepended to the prompt at
 * the start of its next turn and, mid-turn, appended to the result of whichever tool ran (any tool,
 * not only the mesh's), which is what the turn's next model request is built from.
 */
import { formatMessage } from "../tools/index.js";
import type { MeshSession } from "../session/index.js";
import type { PluginConfig } from "./config.js";
import type { PluginApi } from "./host-types.js";
import type { MeshRuntime } from "./runtime.js";

/** The block a turn's model request gets for messages that arrived for its session. */
export async function surfacePending(run: MeshSession): Promise<string | undefined> {
  const batch = await run.take({ max: 50 });
  if (batch.messages.length === 0) return undefined;
  const lines = batch.messages.map((m) => `[mesh id=${m.id}] ${formatMessage(m)}`);
  const block = [
    "<clawmesh-inbox>",
    "Delivered to this session through clawmesh since you last looked (each is shown once):",
    ...lines,
    "</clawmesh-inbox>",
  ].join("\n");
  await batch.confirm();
  return block;
}

export function install(api: PluginApi, runtime: MeshRuntime, _config: PluginConfig): void {
  api.on("before_prompt_build", async (_event, ctx) => {
    if (!ctx.sessionKey) return;
    try {
      const block = await surfacePending(await runtime.runFor(ctx.sessionKey));
      return block ? { prependContext: block } : undefined;
    } catch (err) {
      api.logger.warn(`clawmesh: could not surface pending messages for ${ctx.sessionKey}: ${String(err)}`);
      return undefined;
    }
  });

  // Only sessions whose run is already open: a tool result is no reason to take a session's lease.
  api.registerAgentToolResultMiddleware?.(
    async (event, ctx) => {
      if (!ctx.sessionKey || !runtime.hasRun(ctx.sessionKey)) return undefined;
      try {
        const block = await surfacePending(await runtime.runFor(ctx.sessionKey));
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
