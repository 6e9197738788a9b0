/**
 * Built-in sessions_send routed through the mesh (`routeSessionsSend: true`): the call is answered
 * by a mesh_send from the calling session, and the native send is blocked with what happened.
 */
import { meshTools } from "../tools/index.js";
import type { PluginConfig } from "./config.js";
import type { PluginApi } from "./host-types.js";
import type { MeshRuntime } from "./runtime.js";

const meshSend = meshTools.find((t) => t.name === "mesh_send")!;

export function install(api: PluginApi, runtime: MeshRuntime, config: PluginConfig): void {
  if (config.routeSessionsSend !== true) return;
  api.on("before_tool_call", async (event, ctx) => {
    if (event.toolName !== "sessions_send" || !ctx.sessionKey) return undefined;
    const p = event.params as { sessionKey?: string; agentId?: string; message?: string };
    const run = await runtime.runFor(ctx.sessionKey);
    const r = await meshSend.execute({ ...(p.sessionKey && { sessionKey: p.sessionKey }), ...(p.agentId && { agentId: p.agentId }), message: p.message ?? "" }, { session: run });
    return { block: true, blockReason: `Routed through clawmesh instead: ${r.text}` };
  });
}
