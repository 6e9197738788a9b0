/**
 * Wiring clawmesh into an OpenClaw gateway: the NATS connection as a service, the mesh tools as
 * per-session factories (the caller's identity and delivery context come from OpenClaw, never from
 * the model), pending messages surfaced into turns, children of sessions_spawn reported through the
 * mesh, legacy skip tokens kept out of channels, and turn outcomes fed to the session registry.
 */
import { originFromHostContext } from "../handoff/index.js";
import { classifyReply } from "../handoff/index.js";
import { formatMessage, meshTools } from "../tools/index.js";
import type { MeshSession } from "../session/index.js";
import { parseInput } from "../config.js";
import { PluginConfigSchema, type PluginConfig } from "./config.js";
import type { HostTool, PluginApi, ToolFactoryContext } from "./host-types.js";
import { MeshRuntime } from "./runtime.js";

export const PLUGIN_ID = "clawmesh";

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

export function registerClawmesh(api: PluginApi): MeshRuntime | undefined {
  // Discovery loads only want the tool list; sockets and services belong to the full load.
  const config: PluginConfig = parseInput(PluginConfigSchema, api.pluginConfig ?? {}, "clawmesh plugin config");
  const runtime = new MeshRuntime(config, api.logger);
  const live = api.registrationMode === undefined || api.registrationMode === "full";

  for (const tool of meshTools) {
    api.registerTool(
      (ctx: ToolFactoryContext): HostTool => ({
        name: tool.name,
        label: tool.name,
        description: tool.description,
        parameters: tool.parameters,
        async execute(_toolCallId, params, signal) {
          if (!ctx.sessionKey) throw new Error(`${tool.name} needs a session: call it from an agent turn`);
          const run = await runtime.runFor(ctx.sessionKey);
          const origin = originFromHostContext(run.address, ctx);
          const r = await tool.execute(params, { session: run, ...(origin && { origin }), ...(signal && { signal }) });
          // OpenClaw grades a tool call by throwing, not by words in the result.
          if (!r.ok) throw new Error(r.text);
          return { content: [{ type: "text", text: r.text }], details: { clawmesh: r.details } };
        },
      }),
      { name: tool.name },
    );
  }
  if (!live) return undefined;

  api.registerService({
    id: PLUGIN_ID,
    start: () => runtime.start(),
    stop: () => runtime.stop(),
  });

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

  api.on("agent_end", async (event, ctx) => {
    if (!ctx.sessionKey) return;
    const outcome = event.success ? "ok" : event.error ? "error" : "interrupted";
    await runtime.endRun(ctx.sessionKey, { outcome, ...(event.error && { error: event.error }) }).catch(() => undefined);
  });

  api.on("before_tool_call", async (event, ctx) => {
    if (event.toolName === "sessions_spawn" && config.routeSessionsSpawn !== false) {
      // The child's completion travels through the mesh (subagent_ended); the native announce is
      // switched off so a result is never delivered twice.
      const { completionTarget: _t, ...rest } = event.params;
      return { params: { ...rest, expectsCompletionMessage: false } };
    }
    if (event.toolName === "sessions_send" && config.routeSessionsSend === true && ctx.sessionKey) {
      const p = event.params as { sessionKey?: string; agentId?: string; message?: string };
      const sendTool = meshTools.find((t) => t.name === "mesh_send")!;
      const run = await runtime.runFor(ctx.sessionKey);
      const r = await sendTool.execute({ ...(p.sessionKey && { sessionKey: p.sessionKey }), ...(p.agentId && { agentId: p.agentId }), message: p.message ?? "" }, { session: run });
      return { block: true, blockReason: `Routed through clawmesh instead: ${r.text}` };
    }
    return undefined;
  });

  api.on("subagent_spawned", async (event, ctx) => {
    if (!ctx.requesterSessionKey || config.routeSessionsSpawn === false) return;
    const mesh = await runtime.meshOrThrow().catch(() => undefined);
    await mesh?.registerChildSession({ parent: ctx.requesterSessionKey, child: event.childSessionKey, ...(event.label && { title: event.label }) });
  });

  api.on("subagent_ended", async (event, ctx) => {
    if (!ctx.requesterSessionKey || config.routeSessionsSpawn === false) return;
    const mesh = await runtime.meshOrThrow().catch(() => undefined);
    if (!mesh) return;
    const ok = event.outcome === undefined || event.outcome === "ok";
    await mesh.finishChildSession({
      parent: ctx.requesterSessionKey,
      child: event.targetSessionKey,
      state: ok ? "completed" : "failed",
      ...(ok ? { result: `child session ${event.targetSessionKey} finished` } : { error: event.error ?? `ended: ${event.outcome}` }),
    });
  });

  api.on("message_sending", (event) => {
    const c = classifyReply(event.content ?? "");
    if (c.tokens.length === 0) return undefined;
    if (c.skip || c.text.length === 0) return { cancel: true };
    return { content: c.text };
  });

  api.on("gateway_stop", async () => {
    await runtime.stop();
  });
  return runtime;
}
