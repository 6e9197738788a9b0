/**
 * OpenClaw's sessions_spawn, reported through the mesh: a labelled spawn is idempotent by its label,
 * the child is registered as working for its parent, and its end (with its last reply) lands in the
 * parent's inbox as a task completion, retried until it is published (runtime.reportChildEnd). The
 * native announce is switched off so a result is never delivered twice.
 */
import { sessionKeyOf } from "../address/index.js";
import type { PluginConfig } from "./config.js";
import type { PluginApi } from "./host-types.js";
import type { MeshRuntime } from "./runtime.js";
import { lastAssistantMessage, textOfContent } from "./transcript.js";

/**
 * The child's final answer from its stored transcript (the subagent_ended hook carries no text).
 * A fallback only: the gateway's transcript projection strips control tokens, so a reply that was
 * only a token reads as no reply; the raw answer is taken from the child's own agent_end first.
 */
async function lastAssistantText(api: PluginApi, sessionKey: string): Promise<string | undefined> {
  const read = api.runtime?.subagent?.getSessionMessages;
  if (!read) return undefined;
  try {
    const { messages } = await read({ sessionKey, limit: 50 });
    for (let i = messages.length - 1; i >= 0; i--) {
      const m = messages[i] as { role?: string; content?: unknown };
      if (m.role !== "assistant") continue;
      const text = textOfContent(m.content);
      if (text.trim()) return text;
    }
  } catch (err) {
    api.logger.warn(`clawmesh: could not read the reply of ${sessionKey}: ${String(err)}`);
  }
  return undefined;
}

/** Raw final replies of recent runs by session key (bounded), as their agent_end carried them. */
class FinalReplies {
  private readonly bySession = new Map<string, string>();
  note(sessionKey: string, text: string): void {
    this.bySession.delete(sessionKey);
    this.bySession.set(sessionKey, text);
    if (this.bySession.size > 1000) this.bySession.delete(this.bySession.keys().next().value!);
  }
  take(sessionKey: string): string | undefined {
    const text = this.bySession.get(sessionKey);
    this.bySession.delete(sessionKey);
    return text;
  }
}

export function install(api: PluginApi, runtime: MeshRuntime, config: PluginConfig): void {
  const routed = config.routeSessionsSpawn !== false;
  const finalReplies = new FinalReplies();

  // A child's last answer as its run produced it, tokens and all (its completion classifies them).
  api.on("agent_end", (event, ctx) => {
    if (!routed || !ctx.sessionKey) return;
    const last = lastAssistantMessage(event.messages);
    const text = last && last.stopReason !== "error" ? textOfContent(last.content) : "";
    if (text.trim()) finalReplies.note(ctx.sessionKey, text);
  });

  api.on("before_tool_call", async (event, ctx) => {
    if (event.toolName !== "sessions_spawn") return undefined;
    const label = typeof event.params.label === "string" ? event.params.label.trim() : "";
    if (label && ctx.agentId) {
      // A labelled spawn is idempotent by its label: a live session already on it is reused. The
      // check is best effort: with the bus away the spawn goes ahead (a failing handler here would
      // block it, since OpenClaw fails before_tool_call closed).
      const agent = typeof event.params.agentId === "string" ? event.params.agentId : ctx.agentId;
      const existing = await runtime
        .meshOrThrow()
        .then((mesh) => mesh.tasks.sessionForKey(label, agent))
        .catch((err: unknown) => {
          api.logger.warn(`clawmesh: could not check whether a session already works on label "${label}"; spawning anyway: ${String(err)}`);
          return undefined;
        });
      if (existing) {
        return {
          block: true,
          blockReason: `A session already works on "${event.params.label}": ${sessionKeyOf(existing)} (resumable). Do not spawn a duplicate: send it a follow-up (mesh_send or sessions_send), or wait for it with mesh_await sessionKeys ["${sessionKeyOf(existing)}"].`,
        };
      }
    }
    if (!routed) return undefined;
    // The child's completion travels through the mesh (subagent_ended); the native announce is
    // switched off so a result is never delivered twice.
    // OpenClaw merges returned params over the originals: clear completionTarget explicitly.
    return { params: { ...event.params, completionTarget: undefined, expectsCompletionMessage: false } };
  });

  // Best effort: a child missed here is still registered when its completion is published (only a
  // label claim is lost).
  api.on("subagent_spawned", async (event, ctx) => {
    const mesh = await runtime.meshOrThrow().catch(() => undefined);
    if (!mesh) return;
    try {
      if (event.label?.trim()) await mesh.tasks.claimKey(event.label.trim(), event.childSessionKey);
      if (!ctx.requesterSessionKey || !routed) return;
      await mesh.tasks.registerChild({ parent: ctx.requesterSessionKey, child: event.childSessionKey, ...(event.label && { title: event.label }) });
    } catch (err) {
      api.logger.warn(`clawmesh: could not record the spawn of ${event.childSessionKey}: ${String(err)}`);
    }
  });

  api.on("subagent_ended", async (event, ctx) => {
    if (!ctx.requesterSessionKey || !routed) return;
    const ok = event.outcome === undefined || event.outcome === "ok";
    const raw = finalReplies.take(event.targetSessionKey);
    const reply = ok ? (raw ?? (await lastAssistantText(api, event.targetSessionKey))) : undefined;
    // With the native announce off this is the parent's only news of the child: one that cannot be
    // published now (connection down or reconnecting) is kept and retried by the runtime.
    await runtime.reportChildEnd({
      parent: ctx.requesterSessionKey,
      child: event.targetSessionKey,
      state: ok ? "completed" : "failed",
      ...(ok ? { result: reply ?? `child session ${event.targetSessionKey} finished without a reply` } : { error: event.error ?? `ended: ${event.outcome}` }),
    });
  });
}
