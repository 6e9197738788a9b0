/**
 * Built-in sessions_send routed through the mesh (`routeSessionsSend: true`): the call is answered
 * by a mesh_send from the calling session, and the native send is blocked. The block reason is what
 * the model reads instead of sessions_send's result, so it says truthfully what happened: sent (and
 * how), refused with nothing sent, or sent without confirmation.
 */
import { MeshError } from "../errors.js";
import { meshTools, type ToolResult } from "../tools/index.js";
import type { PluginConfig } from "./config.js";
import type { PluginApi } from "./host-types.js";
import type { MeshRuntime } from "./runtime.js";

const meshSend = meshTools.find((t) => t.name === "mesh_send")!;

interface SessionsSendParams {
  sessionKey?: string;
  agentId?: string;
  label?: string;
  message?: string;
}

/** Why a routed send did not go through: the mesh's error code when there is one. */
interface Failure {
  readonly code: string | undefined;
  readonly detail: string;
}

function failureOf(err: unknown): Failure {
  if (err instanceof MeshError) return { code: err.code, detail: err.message };
  return { code: undefined, detail: err instanceof Error ? `${err.name}: ${err.message}` : String(err) };
}

function failureOfResult(r: ToolResult): Failure {
  const code = typeof r.details.error === "string" ? r.details.error : undefined;
  return { code, detail: typeof r.details.message === "string" ? r.details.message : r.text };
}

const ROUTED = "on this gateway sessions_send goes through clawmesh";

function notSentReason(f: Failure): string {
  switch (f.code) {
    case "mesh_unavailable":
      return `Nothing was sent: ${ROUTED}, and the clawmesh message bus is unreachable right now. Try again shortly, or tell the user the message could not be sent.`;
    case "send_failed":
      return `Not confirmed: ${ROUTED}; the message was handed to clawmesh but the server did not confirm storing it, so it may not have arrived. Check with the recipient before sending it again.`;
    case undefined:
      return `Not confirmed: ${ROUTED}, and the send failed unexpectedly (${f.detail}); it may not have arrived.`;
    default:
      return `Nothing was sent: ${ROUTED}, and clawmesh refused this send (${f.code}): ${f.detail}`;
  }
}

async function routeThroughMesh(runtime: MeshRuntime, from: string, p: SessionsSendParams): Promise<{ sent: true; reason: string } | { sent: false; failure: Failure }> {
  if (!p.sessionKey && !p.agentId) {
    const detail = p.label ? "a sessions_send by label cannot be routed; give sessionKey or agentId" : "give sessionKey or agentId";
    return { sent: false, failure: { code: "invalid_parameters", detail } };
  }
  let r: ToolResult;
  try {
    const run = await runtime.runFor(from);
    r = await meshSend.execute({ ...(p.sessionKey && { sessionKey: p.sessionKey }), ...(p.agentId && { agentId: p.agentId }), message: p.message ?? "" }, { session: run });
  } catch (err) {
    return { sent: false, failure: failureOf(runtime.explain(err)) };
  }
  if (!r.ok) return { sent: false, failure: failureOfResult(r) };
  return { sent: true, reason: `Sent through clawmesh (${ROUTED}; the native sessions_send did not run). ${r.text}` };
}

export function install(api: PluginApi, runtime: MeshRuntime, config: PluginConfig): void {
  if (config.routeSessionsSend !== true) return;
  api.on("before_tool_call", async (event, ctx) => {
    if (event.toolName !== "sessions_send" || !ctx.sessionKey) return undefined;
    const out = await routeThroughMesh(runtime, ctx.sessionKey, event.params as SessionsSendParams);
    if (out.sent) return { block: true, blockReason: out.reason };
    api.logger.warn(`clawmesh: a sessions_send from ${ctx.sessionKey} was not routed (${out.failure.code ?? "unexpected error"})`);
    return { block: true, blockReason: notSentReason(out.failure) };
  });
}
