/**
 * The mesh's tools. Parameter names follow OpenClaw's session tools where the meaning is the same
 * (`sessionKey`, `agentId`, `message`, `timeoutSeconds`).
 */
import { z } from "zod";
import { describeAddress, parseSessionKey, sessionKeyOf, type SessionAddress } from "../address/index.js";
import { TASK_ID_RE, Kinds } from "../wire/index.js";
import { childTaskId } from "../session/index.js";
import type { FinishedItem, PendingItem } from "../tasks/index.js";
import type { InboxMessage } from "../inbox/index.js";
import { bodyText, defineTool, type MeshTool, type ToolContext } from "./tool.js";

const target = {
  sessionKey: z.string().min(1).optional().describe("Session key of the recipient, e.g. agent:re-portal:telegram:direct:8035547811"),
  agentId: z.string().min(1).optional().describe("Agent id; without sessionKey it means that agent's main session (agent:<agentId>:main)"),
  instance: z.string().min(1).optional().describe("Gateway instance that owns the recipient session; default: this gateway"),
};
const timeoutSeconds = z.number().min(0).max(600).optional();

function resolveTarget(p: { sessionKey?: string | undefined; agentId?: string | undefined; instance?: string | undefined }, ctx: ToolContext): SessionAddress {
  const key = p.sessionKey ?? `agent:${p.agentId}:main`;
  return parseSessionKey(key, p.instance ?? ctx.session.address.instance);
}

const needsTarget = (p: { sessionKey?: string | undefined; agentId?: string | undefined }) => p.sessionKey !== undefined || p.agentId !== undefined;
const targetIssue = { message: "give sessionKey or agentId", path: ["sessionKey"] };

export const meshSend = defineTool({
  name: "mesh_send",
  description:
    "Send a message to another agent session (on this or another gateway). It is stored durably in the recipient's inbox. " +
    "By default it does not wait; with timeoutSeconds > 0 a reply that arrives in time is returned inline, otherwise the reply is delivered to this session later.",
  schema: z
    .object({ ...target, message: z.string().min(1).describe("The message text"), timeoutSeconds: timeoutSeconds.describe("Seconds to wait for an inline reply (0-600, default 0)") })
    .strict()
    .refine(needsTarget, targetIssue),
  async run(p, ctx) {
    const to = resolveTarget(p, ctx);
    const out = await ctx.session.send({ to, body: p.message, waitMs: (p.timeoutSeconds ?? 0) * 1000, ...(ctx.signal && { signal: ctx.signal }) });
    if (out.status === "replied") {
      return { ok: true, text: `Reply from ${sessionKeyOf(out.from)}: ${bodyText(out.reply)}`, details: { status: "ok", id: out.id, reply: out.reply, from: out.from } };
    }
    return {
      ok: true,
      text:
        `Message delivered to the inbox of ${describeAddress(to)} (id ${out.id}). ` +
        `${(p.timeoutSeconds ?? 0) > 0 ? "No reply arrived within the wait. " : ""}Any reply will be delivered to this session automatically; you do not need to wait or poll. Continue with other work.`,
      details: { status: "accepted", id: out.id, delivery: "durable" },
    };
  },
});

export const meshDelegate = defineTool({
  name: "mesh_delegate",
  description:
    "Delegate a task to another agent session. Creates a tracked task and sends the request. The result comes back to this session as a task completion " +
    "(use mesh_await to block on it). With timeoutSeconds > 0, a result that arrives in time is returned inline.",
  schema: z
    .object({
      ...target,
      message: z.string().min(1).describe("What the other session should do"),
      taskId: z.string().regex(TASK_ID_RE, "1-60 characters of A-Z a-z 0-9 _ -").optional().describe("Your own id for the task (retrying with the same id does not duplicate it)"),
      timeoutSeconds: timeoutSeconds.describe("Seconds to wait for the result inline (0-600, default 0)"),
    })
    .strict()
    .refine(needsTarget, targetIssue),
  async run(p, ctx) {
    const to = resolveTarget(p, ctx);
    const out = await ctx.session.delegate({
      to,
      message: p.message,
      ...(p.taskId && { taskId: p.taskId }),
      waitMs: (p.timeoutSeconds ?? 0) * 1000,
      ...(ctx.signal && { signal: ctx.signal }),
    });
    if (out.finished) {
      return { ok: true, text: `Task ${out.taskId} ${describeFinished(out.finished)}`, details: { ...out.finished } };
    }
    return {
      ok: true,
      text: `Task ${out.taskId} delegated to ${describeAddress(to)} (state: ${out.state}). Its result will arrive in this session when it finishes; call mesh_await with taskIds ["${out.taskId}"] to wait for it.`,
      details: { taskId: out.taskId, state: out.state, assignee: sessionKeyOf(to) },
    };
  },
});

export const meshComplete = defineTool({
  name: "mesh_complete",
  description: "Declare a task assigned to this session finished, with its result (status completed) or what went wrong (status failed). The requester is notified durably.",
  schema: z
    .object({
      taskId: z.string().regex(TASK_ID_RE, "a task id from the task request"),
      status: z.enum(["completed", "failed"]).describe("completed: done with a result; failed: could not be done"),
      result: z.string().optional().describe("The result (for completed)"),
      error: z.string().max(4000).optional().describe("What went wrong (for failed)"),
    })
    .strict()
    .refine((p) => p.status !== "completed" || p.result !== undefined, { message: "a completed task needs a result", path: ["result"] })
    .refine((p) => p.status !== "failed" || p.error !== undefined, { message: "a failed task needs an error", path: ["error"] }),
  async run(p, ctx) {
    const out = await ctx.session.complete({ taskId: p.taskId, state: p.status, ...(p.result !== undefined && { result: p.result }), ...(p.error !== undefined && { error: p.error }) });
    const r = out.record;
    const text =
      out.outcome === "finished"
        ? `Task ${p.taskId} is now ${r.state}; the requester (${sessionKeyOf(r.requester)}) has been notified. Nothing more to do for it.`
        : out.outcome === "already"
          ? `Task ${p.taskId} was already ${r.state} with this same outcome; nothing changed (completing twice is harmless).`
          : `Task ${p.taskId} had already been finished as ${r.state} by ${r.finishedBy ?? "another writer"}; your outcome was NOT recorded. Recorded result: ${bodyText(r.result ?? r.error ?? "")}`;
    return { ok: out.outcome !== "conflict", text, details: { outcome: out.outcome, taskId: p.taskId, state: r.state, result: r.result, error: r.error } };
  },
});

export const meshAwait = defineTool({
  name: "mesh_await",
  description:
    "Wait for delegated tasks and/or child sessions to finish. mode all (default) waits for every one, any for the first. " +
    "Returns results as they are; on timeout returns what is done plus the state of the rest.",
  schema: z
    .object({
      taskIds: z.array(z.string().regex(TASK_ID_RE, "a task id")).max(100).optional().describe("Task ids from mesh_delegate"),
      sessionKeys: z.array(z.string().min(1)).max(100).optional().describe("Keys of child sessions started outside the mesh (e.g. by sessions_spawn)"),
      mode: z.enum(["all", "any"]).optional(),
      timeoutSeconds: z.number().min(0).max(3600).optional().describe("Seconds to wait (default 60, max 3600)"),
    })
    .strict()
    .refine((p) => (p.taskIds?.length ?? 0) + (p.sessionKeys?.length ?? 0) > 0, { message: "give at least one task id or session key", path: ["taskIds"] }),
  async run(p, ctx) {
    const targets = [
      ...(p.taskIds ?? []).map((taskId) => ({ taskId })),
      ...(p.sessionKeys ?? []).map((sessionKey) => ({ taskId: childTaskId(parseSessionKey(sessionKey, ctx.session.address.instance)), sessionKey })),
    ];
    const r = await ctx.session.await(targets, { mode: p.mode ?? "all", timeoutMs: (p.timeoutSeconds ?? 60) * 1000, ...(ctx.signal && { signal: ctx.signal }) });
    const lines = [
      ...r.done.map((d) => `- ${d.sessionKey ?? d.taskId}: ${describeFinished(d)}`),
      ...r.pending.map((q) => `- ${q.sessionKey ?? q.taskId}: ${describePending(q)}`),
    ];
    const head = r.timedOut
      ? `Waited ${p.timeoutSeconds ?? 60}s: ${r.done.length} finished, ${r.pending.length} still pending.`
      : `${r.done.length} finished${r.pending.length ? `, ${r.pending.length} still pending` : ""}.`;
    const tail = r.pending.length
      ? "\nPending results will be delivered to this session when they finish. A task that is working or submitted is alive: do not start a duplicate; wait again or continue other work."
      : "";
    return { ok: true, text: `${head}\n${lines.join("\n")}${tail}`, details: { ...r } };
  },
});

export const meshInbox = defineTool({
  name: "mesh_inbox",
  description: "Show the messages and task results waiting for this session now (each is shown once).",
  schema: z.object({ max: z.number().int().min(1).max(100).optional().describe("Most messages to show (default 20)") }).strict(),
  async run(p, ctx) {
    const batch = await ctx.session.take({ max: p.max ?? 20 });
    await batch.confirm();
    if (batch.messages.length === 0) return { ok: true, text: "No new messages.", details: { messages: [] } };
    return {
      ok: true,
      text: `${batch.messages.length} new message(s):\n${batch.messages.map(formatMessage).join("\n")}`,
      details: { messages: batch.messages.map(({ envelope: _e, ...m }) => m) },
    };
  },
});

export const meshTools: readonly MeshTool[] = [meshSend, meshDelegate, meshComplete, meshAwait, meshInbox];

/** One inbox message as the model reads it (also used by hosts that inject messages into a turn). */
export function formatMessage(m: InboxMessage): string {
  const from = `${sessionKeyOf(m.from)} @${m.from.instance}`;
  if (m.kind === Kinds.taskComplete) {
    const b = m.body as { state?: string; result?: unknown; error?: string };
    return `[task ${m.taskId} ${b.state ?? "finished"} by ${from}] ${bodyText(b.result ?? b.error ?? "")}`;
  }
  if (m.kind === Kinds.taskRequest) {
    const b = m.body as { message?: string };
    return `[task ${m.taskId} requested by ${from}; when done call mesh_complete with this taskId] ${b.message ?? ""}`;
  }
  if (m.kind === Kinds.reply) return `[reply from ${from} to ${m.correlationId}] ${bodyText(m.body)}`;
  return `[message from ${from}] ${bodyText(m.body)}`;
}

function describeFinished(d: FinishedItem): string {
  const outcome = d.state === "completed" ? `completed by ${d.assignee}` : `${d.state} (${d.assignee})`;
  if (d.surfaced === "inbox") return `${outcome}; its result is among the messages being shown to you now.`;
  const payload = d.result !== undefined ? `: ${bodyText(d.result)}` : d.error ? `: ${d.error}` : "";
  return `${outcome}${payload}`;
}

function describePending(q: PendingItem): string {
  if (q.state === "unknown") return "no record yet (not started, or unknown id)";
  return `still ${q.state}${q.assignee ? ` at ${q.assignee}` : ""}`;
}
