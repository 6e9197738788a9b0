/**
 * The mesh's tools. Parameter names follow OpenClaw's session tools where the meaning is the same
 * (`sessionKey`, `agentId`, `message`, `timeoutSeconds`).
 */
import { randomUUID } from "node:crypto";
import { z } from "zod";
import { MeshError, SessionClosedError } from "../errors.js";
import { describeAddress, parseSessionKey, sessionKeyOf, type SessionAddress } from "../address/index.js";
import { TASK_ID_RE, Kinds } from "../wire/index.js";
import { childTaskId } from "../session/index.js";
import type { FinishedItem, PendingItem } from "../tasks/index.js";
import type { InboxMessage } from "../inbox/index.js";
import { describeTarget } from "../registry/index.js";
import { bodyText, defineTool, type MeshTool, type ToolContext, type ToolResult } from "./tool.js";

const target = {
  sessionKey: z.string().min(1).optional().describe("Session key of the recipient, e.g. agent:re-portal:telegram:direct:8035547811"),
  channel: z
    .string()
    .min(1)
    .optional()
    .describe("Instead of sessionKey: a channel address served by the recipient, e.g. discord:#product-chat, telegram:<chatId>, telegram:<chatId>/topic/<id>"),
  agentId: z.string().min(1).optional().describe("Agent id: picks among the sessions serving a channel; alone, that agent's main session (agent:<agentId>:main)"),
  instance: z.string().min(1).optional().describe("Gateway instance that owns the recipient session; default: this gateway (with channel: any)"),
};
const timeoutSeconds = z.number().min(0).max(600).optional();
const overrides = {
  announceTarget: z
    .string()
    .min(3)
    .optional()
    .describe("Deliver the eventual announce to this chat instead of where the conversation lives, e.g. telegram:-100123 or discord:1234567890 (must be allowed by the channel policy)"),
  announceThreadId: z.string().min(1).optional().describe("Deliver the eventual announce into this thread/topic of the target chat"),
};
const routing = (p: { announceTarget?: string | undefined; announceThreadId?: string | undefined }, ctx: ToolContext) => ({
  ...(ctx.origin && { origin: ctx.origin }),
  ...(p.announceTarget !== undefined && { announceTarget: p.announceTarget }),
  ...(p.announceThreadId !== undefined && { announceThreadId: p.announceThreadId }),
});

type TargetParams = { sessionKey?: string | undefined; channel?: string | undefined; agentId?: string | undefined; instance?: string | undefined };

async function resolveTarget(p: TargetParams, ctx: ToolContext): Promise<SessionAddress> {
  if (p.channel !== undefined) {
    return ctx.session.services.directory.resolve(p.channel, { ...(p.agentId && { agent: p.agentId }), ...(p.instance && { instance: p.instance }) });
  }
  const key = p.sessionKey ?? `agent:${p.agentId}:main`;
  return parseSessionKey(key, p.instance ?? ctx.session.address.instance);
}

const needsTarget = (p: TargetParams) => p.sessionKey !== undefined || p.agentId !== undefined || p.channel !== undefined;
const targetIssue = { message: "give sessionKey, channel or agentId", path: ["sessionKey"] };
const oneTarget = (p: TargetParams) => !(p.sessionKey !== undefined && p.channel !== undefined);
const oneTargetIssue = { message: "give sessionKey or channel, not both", path: ["channel"] };

export const meshSend = defineTool({
  name: "mesh_send",
  description:
    "Send a message to another agent session (on this or another gateway). It is stored durably in the recipient's inbox. " +
    "By default it does not wait; with timeoutSeconds > 0 a reply that arrives in time is returned inline, otherwise the reply is delivered to this session later.",
  schema: z
    .object({
      ...target,
      message: z.string().min(1).describe("The message text"),
      replyTo: z.string().min(1).max(64).optional().describe("Id of a message you received (shown as [mesh id=...]) that this answers; the answer goes back to its sender"),
      timeoutSeconds: timeoutSeconds.describe("Seconds to wait for an inline reply (0-600, default 0)"),
      ...overrides,
    })
    .strict()
    .refine((p) => p.replyTo !== undefined || needsTarget(p), targetIssue)
    .refine(oneTarget, oneTargetIssue),
  async run(p, ctx) {
    if (p.replyTo !== undefined) {
      const sender = ctx.session.senderOf(p.replyTo);
      const to = sender ?? (needsTarget(p) ? await resolveTarget(p, ctx) : undefined);
      if (!to) return { ok: false, text: `mesh_send was not run: message ${p.replyTo} was not shown in this run; give sessionKey (and instance) of its sender too.`, details: { error: "unknown_message" } };
      const r = await ctx.session.reply({ id: p.replyTo, from: to }, p.message);
      if (r.action === "skip") {
        return { ok: true, text: `Reply to ${p.replyTo} recorded as a silent skip: ${describeAddress(to)} is told nothing. Nothing more to do for it.`, details: { replied: p.replyTo, id: r.id, action: r.action } };
      }
      return { ok: true, text: `Reply to ${p.replyTo} delivered to ${describeAddress(to)} (id ${r.id}). Nothing more to do for it.`, details: { replied: p.replyTo, id: r.id, action: r.action } };
    }
    const to = await resolveTarget(p, ctx);
    let out;
    try {
      out = await ctx.session.send({ to, body: p.message, waitMs: (p.timeoutSeconds ?? 0) * 1000, ...routing(p, ctx), ...(ctx.signal && { signal: ctx.signal }) });
    } catch (err) {
      if (err instanceof SessionClosedError) return closedResult("mesh_send", err, "Nothing was sent or stored");
      throw err;
    }
    if (out.status === "replied" && out.action === "skip") {
      return { ok: true, text: `${sessionKeyOf(out.from)} answered silently: it has nothing to tell you about this message. Nothing more to do for it.`, details: { status: "ok", id: out.id, action: "skip", from: out.from } };
    }
    if (out.status === "replied") {
      return { ok: true, text: `Reply from ${sessionKeyOf(out.from)}: ${bodyText(out.reply)}`, details: { status: "ok", id: out.id, action: "reply", reply: out.reply, from: out.from } };
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
      taskKey: z
        .string()
        .min(1)
        .max(200)
        .optional()
        .describe("A stable name for this piece of work. If a session already works on it, that session is reused instead of starting a duplicate. Needs agentId."),
      forceNew: z.boolean().optional().describe("With taskKey: start a new session even if one exists (rarely needed)"),
      parentTaskId: z.string().regex(TASK_ID_RE, "a task id").optional().describe("The task assigned to you that this delegation is part of: its result then goes back to that task's conversation"),
      ...overrides,
      timeoutSeconds: timeoutSeconds.describe("Seconds to wait for the result inline (0-600, default 0)"),
    })
    .strict()
    .refine(needsTarget, targetIssue)
    .refine(oneTarget, oneTargetIssue)
    .refine((p) => p.taskKey === undefined || p.agentId !== undefined, { message: "a taskKey needs agentId (which agent should work on it)", path: ["agentId"] }),
  async run(p, ctx) {
    const explicit = p.sessionKey !== undefined || p.channel !== undefined;
    const to = explicit || p.taskKey === undefined ? await resolveTarget(p, ctx) : undefined;
    // Chosen here when the model gave none, so a failed delegation can be retried under the same id.
    const taskId = p.taskId ?? (p.taskKey === undefined ? randomUUID() : undefined);
    let out;
    try {
      out = await ctx.session.delegate({
        ...(to && { to }),
        message: p.message,
        ...(taskId && { taskId }),
        ...(p.taskKey && { taskKey: { key: p.taskKey, agent: p.agentId!.toLowerCase(), instance: p.instance ?? ctx.session.address.instance, ...(p.forceNew && { forceNew: true }) } }),
        ...(p.parentTaskId && { parentTaskId: p.parentTaskId }),
        ...routing(p, ctx),
        waitMs: (p.timeoutSeconds ?? 0) * 1000,
        ...(ctx.signal && { signal: ctx.signal }),
      });
    } catch (err) {
      if (err instanceof SessionClosedError) return closedResult("mesh_delegate", err, "Nothing was delegated: no task exists and nobody is working on it");
      if (!(err instanceof MeshError)) throw err;
      const retry = taskId !== undefined ? `taskId "${taskId}"` : `taskKey "${p.taskKey}"`;
      if (REFUSED_CODES.has(err.code)) {
        return {
          ok: false,
          text: `mesh_delegate failed: ${err.message}. Nothing was delegated: no task exists and nobody is working on it. Fix the problem, then call mesh_delegate again (the same ${retry} may be reused).`,
          details: { error: err.code, message: err.message, delegated: false, ...(taskId && { taskId }) },
        };
      }
      if (err.code === "send_failed") {
        return {
          ok: false,
          text: `mesh_delegate could not confirm that the request reached ${to ? describeAddress(to) : "the session"}: ${err.message}. Nobody is known to have received this task, so do not wait for it. Call mesh_delegate again with the same ${retry} and message: that cannot start a duplicate.`,
          details: { error: err.code, message: err.message, delegated: "unconfirmed", ...(taskId && { taskId }) },
        };
      }
      throw err;
    }
    if (out.reused) {
      return {
        ok: true,
        text: `A session already works on task key "${p.taskKey}": ${describeAddress(out.assignee)} (task ${out.taskId}, state ${out.state}). Reused it; nothing new was started. To add instructions, mesh_send to that session; to wait for it, mesh_await with taskIds ["${out.taskId}"].`,
        details: { reused: true, taskId: out.taskId, sessionKey: sessionKeyOf(out.assignee), instance: out.assignee.instance, state: out.state },
      };
    }
    if (out.finished) {
      return { ok: true, text: `Task ${out.taskId} ${describeFinished(out.finished)}`, details: { ...out.finished } };
    }
    return {
      ok: true,
      text: `Task ${out.taskId} delegated to ${describeAddress(out.assignee)}: the request is stored in its inbox (state: ${out.state}). Its result will arrive in this session when it finishes; call mesh_await with taskIds ["${out.taskId}"] to wait for it.`,
      details: { reused: false, taskId: out.taskId, state: out.state, sessionKey: sessionKeyOf(out.assignee), instance: out.assignee.instance },
    };
  },
});

export const meshComplete = defineTool({
  name: "mesh_complete",
  description: "Declare a task assigned to this session finished, with its result (status completed) or what went wrong (status failed). The requester is notified durably.",
  schema: z
    .object({
      taskId: z.string().regex(TASK_ID_RE, "a task id from the task request"),
      requester: z.string().min(1).optional().describe("Gateway that asked (the task request's sender instance); needed only when two gateways used the same task id"),
      status: z.enum(["completed", "failed"]).describe("completed: done with a result; failed: could not be done"),
      result: z.string().optional().describe("The result (for completed)"),
      error: z.string().max(4000).optional().describe("What went wrong (for failed)"),
      action: z
        .enum(["reply", "skip", "announce"])
        .optional()
        .describe("reply (default): the requester's agent gets the result; skip: record it and tell nobody; announce: also post it to the user where the conversation started (its thread)"),
      ...overrides,
    })
    .strict()
    .refine((p) => p.status !== "completed" || p.result !== undefined, { message: "a completed task needs a result", path: ["result"] })
    .refine((p) => p.status !== "failed" || p.error !== undefined, { message: "a failed task needs an error", path: ["error"] }),
  async run(p, ctx) {
    const out = await ctx.session.complete({
      taskId: p.taskId,
      state: p.status,
      ...(p.requester !== undefined && { requester: p.requester }),
      ...(p.result !== undefined && { result: p.result }),
      ...(p.error !== undefined && { error: p.error }),
      ...(p.action !== undefined && { action: p.action }),
      ...(p.announceTarget !== undefined && { announceTarget: p.announceTarget }),
      ...(p.announceThreadId !== undefined && { announceThreadId: p.announceThreadId }),
    });
    const r = out.record;
    const requester = sessionKeyOf(r.requester);
    const pending = out.notification === "pending";
    const notYet = ` The requester (${requester}) could NOT be notified yet (its inbox is full or unreachable); the outcome is recorded, and the mesh keeps retrying in the background until the result is delivered, once.`;
    const text =
      out.outcome === "finished"
        ? pending
          ? `Task ${p.taskId} is now ${r.state}.${notYet} Nothing more to do for it.`
          : `Task ${p.taskId} is now ${r.state}; the requester (${requester}) has been notified${r.action === "announce" ? " and the result is being posted where the conversation started" : r.action === "skip" ? " (silently: nothing posted)" : ""}. Nothing more to do for it.`
        : out.outcome === "already"
          ? `Task ${p.taskId} was already ${r.state} with this same outcome; nothing changed (completing twice is harmless).${pending ? notYet : ""}`
          : `Task ${p.taskId} had already been finished as ${r.state} by ${r.finishedBy ?? "another writer"}; your outcome was NOT recorded. Recorded result: ${bodyText(r.result ?? r.error ?? "")}`;
    return { ok: out.outcome !== "conflict", text, details: { outcome: out.outcome, taskId: p.taskId, state: r.state, result: r.result, error: r.error, notification: out.notification } };
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
    const alive = r.pending.filter((q) => q.state !== "unknown" && q.delivery !== "undelivered").length;
    const tail =
      (alive > 0
        ? "\nPending results will be delivered to this session when they finish. A task whose request was received (working, input-required, or submitted) is alive: do not start a duplicate; wait again or continue other work."
        : "") +
      (alive < r.pending.length ? "\nA task shown as not received or unknown is not being worked on by anyone: if it is still needed, call mesh_delegate again (the same taskId may be reused)." : "");
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

export const meshSessions = defineTool({
  name: "mesh_sessions",
  description:
    "List agent sessions across all gateways with their lifecycle (active/idle/closed), whether they can be resumed, how their last turn went, and their declared task state. " +
    "A last turn that timed out or failed does NOT mean the session is gone: if it is resumable, send it a follow-up instead of spawning a duplicate.",
  schema: z
    .object({
      agentId: z.string().min(1).optional(),
      channel: z.string().min(1).optional().describe("A channel address or a session channel (telegram, discord, cron...)"),
      lifecycle: z.enum(["active", "idle", "closed"]).optional(),
      instance: z.string().min(1).optional(),
      limit: z.number().int().min(1).max(200).optional().describe("Most rows (default 50)"),
    })
    .strict(),
  async run(p, ctx) {
    const rows = (await ctx.session.services.sessions.list({
      ...(p.agentId && { agent: p.agentId.toLowerCase() }),
      ...(p.channel && { channel: p.channel }),
      ...(p.lifecycle && { lifecycle: p.lifecycle }),
      ...(p.instance && { instance: p.instance }),
    })).slice(0, p.limit ?? 50);
    const lines = rows.map((r) => {
      const turn = r.lastTurn ? `, last turn ${r.lastTurn.outcome}${r.lastTurn.error ? ` (${r.lastTurn.error.slice(0, 80)})` : ""}` : "";
      const task = r.task ? `, task ${r.task.state}` : "";
      const chan = r.channel ? `, serves ${r.channel}` : "";
      return `- ${r.sessionKey} @${r.owner}: ${r.lifecycle}, ${r.resumable ? "resumable" : "not resumable"}${turn}${task}${chan}`;
    });
    const hint = "Note: a last turn of timeout or error does not mean the session is gone; a resumable session takes follow-ups (mesh_send).";
    return { ok: true, text: rows.length ? `${rows.length} session(s):\n${lines.join("\n")}\n${hint}` : "No sessions match.", details: { sessions: rows } };
  },
});

export const meshWatch = defineTool({
  name: "mesh_watch",
  description:
    "Get notified in this session when another session or a task completes, fails or closes (a durable message, delivered even if this gateway was down when it happened). Also lists and removes watches.",
  schema: z
    .object({
      action: z.enum(["add", "list", "remove"]).optional().describe("Default add"),
      sessionKey: z.string().min(1).optional().describe("Session to watch"),
      instance: z.string().min(1).optional().describe("Gateway of the watched session; default this one"),
      taskId: z.string().regex(TASK_ID_RE, "a task id").optional().describe("Task to watch"),
      events: z.array(z.enum(["completed", "failed", "closed"])).min(1).optional().describe("Default all three"),
      watchId: z.string().min(1).optional().describe("For remove"),
    })
    .strict()
    .refine((p) => (p.action ?? "add") !== "add" || (p.sessionKey === undefined) !== (p.taskId === undefined), { message: "add needs exactly one of sessionKey or taskId", path: ["sessionKey"] })
    .refine((p) => p.action !== "remove" || p.watchId !== undefined, { message: "remove needs watchId", path: ["watchId"] }),
  async run(p, ctx) {
    const watches = ctx.session.services.watches;
    const me = ctx.session.address;
    if (p.action === "list") {
      const list = await watches.list(me);
      return {
        ok: true,
        text: list.length ? `${list.length} watch(es):\n${list.map((w) => `- ${w.watchId}: ${describeTarget(w.target)} on ${w.events.join("/")}`).join("\n")}` : "No watches.",
        details: { watches: list },
      };
    }
    if (p.action === "remove") {
      const removed = await watches.remove(me, p.watchId!);
      return { ok: removed, text: removed ? `Watch ${p.watchId} removed.` : `No watch ${p.watchId} of this session.`, details: { removed } };
    }
    const target = p.taskId !== undefined ? { taskId: p.taskId } : { session: parseSessionKey(p.sessionKey!, p.instance ?? me.instance) };
    const w = await watches.add(me, target, p.events ?? ["completed", "failed", "closed"]);
    return {
      ok: true,
      text: `Watching ${describeTarget(target)} for ${w.events.join("/")} (watch ${w.watchId}). A notice will arrive in this session when it happens; no need to poll.`,
      details: { watchId: w.watchId, events: w.events },
    };
  },
});

export const meshTools: readonly MeshTool[] = [meshSend, meshDelegate, meshComplete, meshAwait, meshInbox, meshSessions, meshWatch];

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
  if (m.kind === Kinds.announce) {
    const b = m.body as { text?: string; deliveryTarget?: { channel?: string; to?: string } };
    return `[announce for ${b.deliveryTarget?.channel}:${b.deliveryTarget?.to} from ${from}] ${b.text ?? ""}`;
  }
  if (m.kind === Kinds.watchEvent) {
    const b = m.body as { event?: string; target?: string; result?: unknown; error?: string };
    const payload = b.result !== undefined ? `: ${bodyText(b.result)}` : b.error ? `: ${b.error}` : "";
    return `[watch: ${b.target ?? "?"} ${b.event ?? "changed"}${payload}]`;
  }
  return `[message from ${from}] ${bodyText(m.body)}`;
}

/** What the model reads when the recipient session is closed: nothing happened, and what to do instead. */
function closedResult(tool: string, err: SessionClosedError, nothing: string): ToolResult {
  return {
    ok: false,
    text: `${tool} was not run: session ${err.sessionKey} @${err.instance} was closed and takes no more messages or tasks. ${nothing}. To carry on with this work, start a new session (mesh_delegate with agentId and a taskKey, or sessions_spawn) and give it the work there.`,
    details: { error: err.code, sessionKey: err.sessionKey, instance: err.instance, message: err.message },
  };
}

function describeFinished(d: FinishedItem): string {
  const outcome = d.state === "completed" ? `completed by ${d.assignee}` : `${d.state} (${d.assignee})`;
  if (d.action === "skip") return `${outcome}, silently: its assignee chose to report nothing, so there is no result to pass on.`;
  if (d.surfaced === "inbox") return `${outcome}; its result is among the messages being shown to you now.`;
  const payload = d.result !== undefined ? `: ${bodyText(d.result)}` : d.error ? `: ${d.error}` : "";
  return `${outcome}${payload}`;
}

function describePending(q: PendingItem): string {
  if (q.state === "unknown") return "no task with this id: it was never created, or its delegation failed (nobody is working on it)";
  const at = q.assignee ? ` ${q.assignee}` : " the assignee";
  if (q.delivery === "undelivered") return `NOT received: its request never reached${at} (the delegation failed); nobody is working on it`;
  if (q.delivery === "sending") return `its request to${at} is still being sent (not confirmed yet)`;
  return `still ${q.state}${q.assignee ? ` at ${q.assignee}` : ""}`;
}

/** Errors of a delegation that was refused before anything reached the assignee (its record was removed). */
const REFUSED_CODES: ReadonlySet<string> = new Set(["unknown_instance", "payload_too_large", "stream_refused", "invalid_address"]);
