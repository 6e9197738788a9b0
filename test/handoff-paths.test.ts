/**
 * Every handoff path (a reply later and inline, a completion, `mesh.tasks.finish`,
 * `mesh.tasks.finishChild`) goes through the one legacy-token rule: chatter plus a token gives a
 * structured action, and no text a model or a channel would see holds a bare token.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { classifyReply } from "../src/handoff/index.js";
import { SessionClosedError, formatMessage, meshTools, parseSessionKey, type Mesh, type MeshSession, type MeshTool } from "../src/index.js";
import { decodeEnvelope, Kinds, ReservedIds, type Envelope } from "../src/wire/index.js";
import type { MeshContext } from "../src/mesh-context.js";
import { startTestServer, type TestServer } from "./harness/server.js";
import { closeInternalContexts, inspect, internalContext, openMesh, uniquePrefix, removeTestStreams } from "./harness/mesh.js";

let server: TestServer;
const cleanups: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  server = await startTestServer();
});
afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
  await closeInternalContexts();
  await removeTestStreams(server);
  await server.dispose();
});

const tool = (name: string): MeshTool => meshTools.find((t) => t.name === name)!;

/** No bare token left: the rule finds nothing to act on, quote or remove. */
function expectNoToken(text: string): void {
  const c = classifyReply(text);
  expect([c.tokens, c.mentions, c.struck], text).toEqual([[], [], []]);
}

async function world(): Promise<{ mesh: Mesh; ctx: MeshContext; open: (key: string) => Promise<MeshSession> }> {
  const prefix = uniquePrefix();
  const mesh = await openMesh(server, { prefix, instance: "gw1" });
  cleanups.push(() => mesh.close());
  const ctx = await internalContext(server, prefix, "gw1");
  const open = async (key: string) => {
    const s = await mesh.sessions.open(key);
    cleanups.push(() => s.close());
    return s;
  };
  return { mesh, ctx, open };
}

/** The last envelope stored for a session, as the server holds it. */
async function lastStored(ctx: MeshContext, session: MeshSession): Promise<Envelope> {
  const m = await ctx.jsm.direct.getMessage(ctx.names.inboxStream(session.address.instance), { last_by_subj: ctx.names.sessionFilter(session.address) });
  const d = decodeEnvelope(m!.data, ctx.messageLimit);
  if (!d.ok) throw new Error(d.error.detail);
  return d.envelope;
}

/** Take whatever is pending, waiting for the first arrival when nothing is. */
async function takeOne(s: MeshSession) {
  const arrival = s.nextArrival();
  let batch = await s.take();
  if (batch.messages.length === 0) {
    await arrival;
    batch = await s.take();
  }
  return batch;
}

/** The helper answers the next message it gets with `text` (started before the asker waits). */
async function answerNext(helper: MeshSession, text: string): Promise<void> {
  const batch = await takeOne(helper);
  await batch.confirm();
  await helper.reply(batch.messages[0]!, text);
}

describe("one path for every handoff", () => {
  it("a reply sent later with chatter and a skip token is stored stripped as a skip, recorded by the asker and never shown", async () => {
    const { ctx, open } = await world();
    const asker = await open("agent:asker:main");
    const helper = await open("agent:helper:main");
    const sent = await asker.send({ to: helper.address, body: "can you check the April numbers?" });
    const batch = await takeOne(helper);
    await batch.confirm();
    const r = await tool("mesh_send").execute({ replyTo: batch.messages[0]!.id, message: "Noted, will do. REPLY_SKIP" }, { session: helper });
    expect(r.ok).toBe(true);
    expect(r.details).toMatchObject({ action: "skip" });
    expect(r.text).toContain("silent skip");
    const stored = await lastStored(ctx, asker);
    expect(stored).toMatchObject({ kind: Kinds.reply, correlationId: sent.id, action: "skip", body: "Noted, will do." });
    expect((await asker.take()).messages).toEqual([]);
    expect(asker.inbox.surfaced(stored.from.instance, stored.id)).toBe(true);
  });

  it("a reply sent later with chatter, a mention and an announce-skip is shown as plain text with action reply", async () => {
    const { ctx, open } = await world();
    const asker = await open("agent:asker:main");
    const helper = await open("agent:helper:main");
    await asker.send({ to: helper.address, body: "what is the total?" });
    const batch = await takeOne(helper);
    await batch.confirm();
    const out = await helper.reply(batch.messages[0]!, "The total is 42. I won't use REPLY_SKIP here because you asked. ANNOUNCE_SKIP");
    expect(out.action).toBe("reply");
    expect(await lastStored(ctx, asker)).toMatchObject({ action: "reply", body: "The total is 42. I won't use `REPLY_SKIP` here because you asked." });
    const shown = await asker.take();
    await shown.confirm();
    expect(shown.messages.map((m) => m.body)).toEqual(["The total is 42. I won't use `REPLY_SKIP` here because you asked."]);
    expectNoToken(formatMessage(shown.messages[0]!));
  });

  it("an inline reply that is a skip returns as a silent answer with no text for the model", async () => {
    const { open } = await world();
    const asker = await open("agent:asker:main");
    const helper = await open("agent:helper:main");
    const answering = answerNext(helper, "**Noted**, will do.\nreply_skip");
    const r = await tool("mesh_send").execute({ sessionKey: helper.sessionKey, message: "FYI: the deploy is done", timeoutSeconds: 30 }, { session: asker });
    await answering;
    expect(r.details).toMatchObject({ status: "ok", action: "skip" });
    expect(r.details).not.toHaveProperty("reply");
    expect(r.text).toContain("answered silently");
    expect(r.text).not.toContain("Noted");
    expect((await asker.take()).messages).toEqual([]);
  });

  it("an inline reply with chatter and a struck-through token keeps the answer, tokens removed", async () => {
    const { open } = await world();
    const asker = await open("agent:asker:main");
    const helper = await open("agent:helper:main");
    const answering = answerNext(helper, "~~REPLY_SKIP~~ Actually I do have an answer: 42.");
    const out = await asker.send({ to: helper.address, body: "anything to add?", waitMs: 30_000 });
    await answering;
    expect(out).toMatchObject({ status: "replied", action: "reply", reply: "Actually I do have an answer: 42." });
  });

  it("a reply from a sender that predates actions is read by its text: a skip is recorded unshown, chatter is shown stripped", async () => {
    const { ctx, open } = await world();
    const asker = await open("agent:asker:main");
    const old = parseSessionKey("agent:old:main", "gw1");
    const { createEnvelope } = await import("../src/wire/index.js");
    const { sendEnvelope } = await import("../src/inbox/index.js");
    await sendEnvelope(ctx, createEnvelope({ kind: Kinds.reply, from: old, to: asker.address, correlationId: "q1", body: "Got it. NO_REPLY" }));
    await sendEnvelope(ctx, createEnvelope({ kind: Kinds.reply, from: old, to: asker.address, correlationId: "q2", body: "It is 7. ANNOUNCE_SKIP" }));
    const shown = await asker.take();
    await shown.confirm();
    expect(shown.messages.map((m) => [m.correlationId, m.body])).toEqual([["q2", "It is 7."]]);
    expect((await asker.take()).messages).toEqual([]);
  });

  it("a completion with chatter and a skip token is recorded as surfaced, never shown, awaited as a silent finish, and its watches still fire", async () => {
    const { mesh, open } = await world();
    const boss = await open("agent:boss:main");
    const worker = await open("agent:worker:main");
    const watcher = await open("agent:watcher:main");
    const d = await boss.delegate({ to: worker.address, message: "tidy the report" });
    await watcher.services.watches.add(watcher.address, { taskId: d.taskId }, ["completed"]);
    const req = await takeOne(worker);
    await req.confirm();
    const done = await tool("mesh_complete").execute({ taskId: d.taskId, status: "completed", result: "🎯 Done, report tidied. REPLY_SKIP" }, { session: worker });
    expect(done.text).toContain("silently");
    const record = await mesh.tasks.get(d.taskId);
    expect(record).toMatchObject({ state: "completed", action: "skip", result: "🎯 Done, report tidied." });

    expect((await boss.take()).messages).toEqual([]);
    expect(boss.inbox.surfaced("gw1", ReservedIds.taskComplete(d.taskId))).toBe(true);
    const awaited = await tool("mesh_await").execute({ taskIds: [d.taskId], timeoutSeconds: 5 }, { session: boss });
    expect(awaited.details).toMatchObject({ done: [{ taskId: d.taskId, state: "completed", action: "skip" }] });
    expect((awaited.details as { done: { result?: unknown }[] }).done[0]).not.toHaveProperty("result");
    expect(awaited.text).toContain("silently");
    expect(awaited.text).not.toContain("tidied");

    const fired = await takeOne(watcher);
    await fired.confirm();
    expect(fired.messages.map((m) => [m.kind, (m.body as { event?: string }).event])).toEqual([[Kinds.watchEvent, "completed"]]);
    for (const m of fired.messages) expectNoToken(formatMessage(m));
  });

  it("an await that is already waiting when a skip completion lands returns it as finished silently", async () => {
    const { open } = await world();
    const boss = await open("agent:boss:main");
    const worker = await open("agent:worker:main");
    const d = await boss.delegate({ to: worker.address, message: "check the logs" });
    const waiting = boss.await([{ taskId: d.taskId }], { timeoutMs: 30_000 });
    const req = await takeOne(worker);
    await req.confirm();
    await worker.complete({ taskId: d.taskId, state: "completed", result: "Checked.\n\nNO_REPLY" });
    const r = await waiting;
    expect(r.done).toEqual([{ taskId: d.taskId, state: "completed", assignee: worker.sessionKey, action: "skip", surfaced: "await" }]);
    expect((await boss.take()).messages).toEqual([]);
  });

  it("mesh.tasks.finish turns chatter plus tokens into the action: an announce-skip becomes a plain reply whose text has no token", async () => {
    const { mesh, open } = await world();
    const boss = await open("agent:boss:main");
    const worker = await open("agent:worker:main");
    const d = await boss.delegate({ to: worker.address, message: "count the rows" });
    const out = await mesh.tasks.finish({ taskId: d.taskId, by: worker.address, state: "completed", result: "There are 7 rows. I skipped `NO_REPLY` rows. ANNOUNCE_SKIP", action: "announce" });
    expect(out.record).toMatchObject({ action: "reply", result: "There are 7 rows. I skipped `NO_REPLY` rows." });
    const shown = await boss.take();
    await shown.confirm();
    expect(shown.messages.map((m) => m.kind)).toEqual([Kinds.taskComplete]);
    expect(shown.messages[0]!.envelope.action).toBe("reply");
    expectNoToken(formatMessage(shown.messages[0]!));
  });

  it("mesh.tasks.finishChild with a skip token is recorded unshown and awaited by the child's key as a silent finish", async () => {
    const { mesh, open } = await world();
    const parent = await open("agent:main:main");
    const child = "agent:main:subagent:c1";
    const out = await mesh.tasks.finishChild({ parent: parent.address, child, state: "completed", result: "All set, nothing to report.\nREPLY_SKIP" });
    expect(out.record).toMatchObject({ action: "skip", result: "All set, nothing to report." });
    expect((await parent.take()).messages).toEqual([]);
    const awaited = await tool("mesh_await").execute({ sessionKeys: [child], timeoutSeconds: 5 }, { session: parent });
    expect(awaited.details).toMatchObject({ done: [{ sessionKey: child, action: "skip", surfaced: "earlier" }] });
    expect(awaited.text).toContain("silently");
    expectNoToken(awaited.text);
  });
});

describe("a closed session", () => {
  it("refuses a send or a delegation with SessionClosedError before anything is written, and the tools say so", async () => {
    const prefix = uniquePrefix();
    const mesh = await openMesh(server, { prefix, instance: "gw1" });
    cleanups.push(() => mesh.close());
    const boss = await mesh.sessions.open("agent:boss:main");
    cleanups.push(() => boss.close());
    const gone = mesh.address("agent:helper:discord:channel:123");
    await boss.services.directory.bind("discord:#ops", gone);
    await mesh.sessions.close(gone);
    const stored = async () => (await inspect(server, prefix)).storedInbox("gw1");
    const before = await stored();

    await expect(boss.send({ to: gone, body: "still there?" })).rejects.toBeInstanceOf(SessionClosedError);
    await expect(boss.send({ to: gone, body: "still there?", waitMs: 5_000 })).rejects.toMatchObject({ code: "session_closed", sessionKey: "agent:helper:discord:channel:123", instance: "gw1" });
    await expect(boss.delegate({ to: gone, message: "do it", taskId: "closed-1" })).rejects.toBeInstanceOf(SessionClosedError);
    expect(await mesh.tasks.get("closed-1")).toBeUndefined();

    const bySession = await tool("mesh_send").execute({ sessionKey: "agent:helper:discord:channel:123", message: "hello?" }, { session: boss });
    const byChannel = await tool("mesh_send").execute({ channel: "discord:#ops", message: "hello?" }, { session: boss });
    const delegated = await tool("mesh_delegate").execute({ channel: "discord:#ops", message: "do it", taskId: "closed-2" }, { session: boss });
    for (const r of [bySession, byChannel, delegated]) {
      expect(r.ok).toBe(false);
      expect(r.details).toMatchObject({ error: "session_closed", sessionKey: "agent:helper:discord:channel:123" });
      expect(r.text).toContain("was closed");
      expect(r.text).toContain("start a new session");
    }
    expect(delegated.text).toContain("Nothing was delegated");
    expect(await mesh.tasks.get("closed-2")).toBeUndefined();
    expect(await stored()).toBe(before);
  });
});
