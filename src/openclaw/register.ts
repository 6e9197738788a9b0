/**
 * Wiring clawmesh into an OpenClaw gateway: the NATS connection as a service, the mesh tools as
 * per-session factories (the caller's identity and delivery context come from OpenClaw, never from
 * the model), pending messages surfaced into turns, children of sessions_spawn reported through the
 * mesh, legacy skip tokens kept out of channels, and turn outcomes fed to the session registry.
 */
import { classifyReply, originFromHostContext } from "../handoff/index.js";
import { formatMessage, meshTools } from "../tools/index.js";
import type { MeshSession } from "../session/index.js";
import { sessionKeyOf } from "../address/index.js";
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

/**
 * OpenClaw calls register() for several registries in one gateway process (discovery, full, per
 * agent run). They must all share one connection and one table of open runs, or two of them would
 * contend for the same session's lease.
 */
const RUNTIMES = Symbol.for("clawmesh.openclaw.runtimes");
function sharedRuntime(config: PluginConfig, api: PluginApi): MeshRuntime {
  const g = globalThis as { [RUNTIMES]?: Map<string, MeshRuntime> };
  const table = (g[RUNTIMES] ??= new Map());
  const key = JSON.stringify(config);
  let runtime = table.get(key);
  if (!runtime || runtime.stopped) {
    runtime = new MeshRuntime(config, api.logger);
    table.set(key, runtime);
  }
  return runtime;
}

/** The child's final answer, read from its transcript (the subagent_ended hook carries no text). */
async function lastAssistantText(api: PluginApi, sessionKey: string): Promise<string | undefined> {
  const read = api.runtime?.subagent?.getSessionMessages;
  if (!read) return undefined;
  try {
    const { messages } = await read({ sessionKey, limit: 50 });
    for (let i = messages.length - 1; i >= 0; i--) {
      const m = messages[i] as { role?: string; content?: unknown };
      if (m.role !== "assistant") continue;
      const text = typeof m.content === "string" ? m.content : Array.isArray(m.content) ? m.content.map((p: { text?: string }) => p?.text ?? "").join("") : "";
      if (text.trim()) return text;
    }
  } catch (err) {
    api.logger.warn(`clawmesh: could not read the reply of ${sessionKey}: ${String(err)}`);
  }
  return undefined;
}

export function registerClawmesh(api: PluginApi): MeshRuntime | undefined {
  const config: PluginConfig = parseInput(PluginConfigSchema, api.pluginConfig ?? {}, "clawmesh plugin config");
  const runtime = sharedRuntime(config, api);
  const mode = api.registrationMode ?? "full";
  // Seen on openclaw 2026.9.6: agent runs dispatch hooks from the registry of a later
  // "discovery" load in the same process, so hooks go into every runtime registry. They open
  // nothing when registered; the one connection per process is the shared runtime's.
  const hooksWanted = mode === "full" || mode === "discovery" || mode === "tool-discovery";

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
  if (!hooksWanted) return undefined;
  if (mode === "full") {
    api.registerService({
      id: PLUGIN_ID,
      start: () => runtime.start(),
      stop: () => runtime.stop(),
    });
  }

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

  // Mid-turn: whatever arrived while a tool ran (any tool, not only the mesh's) rides along with that
  // tool's result, which is what the turn's next model request is built from.
  api.registerAgentToolResultMiddleware?.(async (event, ctx) => {
    if (!ctx.sessionKey || !runtime.hasRun(ctx.sessionKey)) return undefined;
    try {
      const block = await surfacePending(await runtime.runFor(ctx.sessionKey));
      if (!block) return undefined;
      return { result: { ...event.result, content: [...event.result.content, { type: "text", text: block }] } };
    } catch (err) {
      api.logger.warn(`clawmesh: could not surface pending messages after ${event.toolName}: ${String(err)}`);
      return undefined;
    }
  }, { runtimes: ["openclaw"] });

  api.on("agent_end", async (event, ctx) => {
    if (!ctx.sessionKey) return;
    const outcome = event.success ? "ok" : event.error ? "error" : "interrupted";
    await runtime.endRun(ctx.sessionKey, { outcome, ...(event.error && { error: event.error }) }).catch(() => undefined);
  });

  api.on("before_tool_call", async (event, ctx) => {
    if (event.toolName === "sessions_spawn" && typeof event.params.label === "string" && event.params.label.trim() && ctx.agentId) {
      // A labelled spawn is idempotent by its label: a live session already on it is reused.
      const mesh = await runtime.meshOrThrow().catch(() => undefined);
      const agent = typeof event.params.agentId === "string" ? event.params.agentId : ctx.agentId;
      const existing = await mesh?.tasks.sessionForKey(event.params.label.trim(), agent);
      if (existing) {
        return {
          block: true,
          blockReason: `A session already works on "${event.params.label}": ${sessionKeyOf(existing)} (resumable). Do not spawn a duplicate: send it a follow-up (mesh_send or sessions_send), or wait for it with mesh_await sessionKeys ["${sessionKeyOf(existing)}"].`,
        };
      }
    }
    if (event.toolName === "sessions_spawn" && config.routeSessionsSpawn !== false) {
      // The child's completion travels through the mesh (subagent_ended); the native announce is
      // switched off so a result is never delivered twice.
      // OpenClaw merges returned params over the originals: clear completionTarget explicitly.
      return { params: { ...event.params, completionTarget: undefined, expectsCompletionMessage: false } };
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
    const mesh = await runtime.meshOrThrow().catch(() => undefined);
    if (event.label?.trim()) await mesh?.tasks.claimKey(event.label.trim(), event.childSessionKey);
    if (!ctx.requesterSessionKey || config.routeSessionsSpawn === false) return;
    await mesh?.tasks.registerChild({ parent: ctx.requesterSessionKey, child: event.childSessionKey, ...(event.label && { title: event.label }) });
  });

  api.on("subagent_ended", async (event, ctx) => {
    if (!ctx.requesterSessionKey || config.routeSessionsSpawn === false) return;
    const mesh = await runtime.meshOrThrow().catch(() => undefined);
    if (!mesh) return;
    const ok = event.outcome === undefined || event.outcome === "ok";
    const reply = ok ? await lastAssistantText(api, event.targetSessionKey) : undefined;
    await mesh.tasks.finishChild({
      parent: ctx.requesterSessionKey,
      child: event.targetSessionKey,
      state: ok ? "completed" : "failed",
      ...(ok ? { result: reply ?? `child session ${event.targetSessionKey} finished without a reply` } : { error: event.error ?? `ended: ${event.outcome}` }),
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
