/**
 * The mesh tools as per-session factories: OpenClaw builds each tool for one turn's context, so the
 * calling session, agent and delivery context come from the host, never from the model.
 */
import { originFromHostContext } from "../handoff/index.js";
import { meshTools } from "../tools/index.js";
import type { PluginConfig } from "./config.js";
import type { HostTool, PluginApi, ToolFactoryContext } from "./host-types.js";
import type { MeshRuntime } from "./runtime.js";

export function install(api: PluginApi, runtime: MeshRuntime, _config: PluginConfig): void {
  for (const tool of meshTools) {
    api.registerTool(
      (ctx: ToolFactoryContext): HostTool => ({
        name: tool.name,
        label: tool.name,
        description: tool.description,
        parameters: tool.parameters,
        async execute(_toolCallId, params, signal) {
          if (!ctx.sessionKey) throw new Error(`${tool.name} needs a session: call it from an agent turn`);
          let r;
          try {
            const run = await runtime.runFor(ctx.sessionKey);
            const origin = originFromHostContext(run.address, ctx);
            r = await tool.execute(params, { session: run, ...(origin && { origin }), ...(signal && { signal }) });
          } catch (err) {
            throw runtime.explain(err);
          }
          // OpenClaw grades a tool call by throwing, not by words in the result.
          if (!r.ok) throw new Error(r.text);
          return { content: [{ type: "text", text: r.text }], details: { clawmesh: r.details } };
        },
      }),
      { name: tool.name },
    );
  }
}
