import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { meshTools, type Mesh, type MeshSession } from "../src/index.js";
import { ForbiddenRouteError, originFromHostContext, type HostContext } from "../src/handoff/index.js";
import { AnnounceBodySchema, Kinds, ReservedIds, type DeliveryTarget } from "../src/wire/index.js";
import { startTestServer, type TestServer } from "./harness/server.js";
import { openMesh, uniquePrefix, removeTestStreams } from "./harness/mesh.js";

let server: TestServer;
const cleanups: (() => Promise<unknown>)[] = [];
let policyFile: string;

beforeAll(async () => {
  server = await startTestServer();
  policyFile = join(mkdtempSync(join(tmpdir(), "clawmesh-policy-")), "channel-policy.json");
  writeFileSync(policyFile, JSON.stringify({ announce: { allow: ["telegram:-100*", "slack:C0OPS*"], deny: ["telegram:-100666"] } }));
});
afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
  await removeTestStreams(server);
  await server.dispose();
});

const tool = (name: string) => meshTools.find((t) => t.name === name)!;

async function threeGateways(prefix = uniquePrefix()): Promise<[Mesh, Mesh, Mesh]> {
  const meshes = await Promise.all(["gw-a", "gw-b", "gw-c"].map((instance) => openMesh(server, { prefix, instance, channelPolicyFile: policyFile })));
  cleanups.push(() => Promise.all(meshes.map((m) => m.close())));
  return meshes as [Mesh, Mesh, Mesh];
}

/** What a host does with its inbox: announces go out to their delivery target, as given. */
async function deliverAnnounces(session: MeshSession): Promise<{ target: DeliveryTarget; text: string }[]> {
  const batch = await session.take();
  await batch.confirm();
  return batch.messages.filter((m) => m.kind === Kinds.announce).map((m) => {
    const body = AnnounceBodySchema.parse(m.body);
    return { target: body.deliveryTarget, text: body.text };
  });
}

/** A takes a user message, delegates to B; B (working on it) delegates to C; C answers with an announce. */
async function threeHops(a: MeshSession, host: HostContext, b: MeshSession, c: MeshSession, complete: Record<string, unknown>) {
  const origin = originFromHostContext(a.address, host);
  const d1 = await tool("mesh_delegate").execute({ sessionKey: b.sessionKey, instance: "gw-b", message: "get the April numbers" }, { session: a, ...(origin && { origin }) });
  expect(d1.ok).toBe(true);
  const bBatch = await b.take();
  await bBatch.confirm();
  const taskAB = bBatch.messages[0]!.taskId!;
  // B's own host context points at its own channel; the work it does for A keeps A's origin.
  const bOwn = originFromHostContext(b.address, { deliveryContext: { channel: "discord", to: "channel:b-home" } });
  const d2 = await tool("mesh_delegate").execute({ sessionKey: c.sessionKey, instance: "gw-c", message: "crunch them" }, { session: b, ...(bOwn && { origin: bOwn }) });
  expect(d2.ok).toBe(true);
  const cBatch = await c.take();
  await cBatch.confirm();
  const taskBC = cBatch.messages[0]!.taskId!;
  expect(cBatch.messages[0]!.envelope.origin).toEqual(origin);
  const done = await tool("mesh_complete").execute({ taskId: taskBC, status: "completed", ...complete }, { session: c });
  return { origin, taskAB, taskBC, done };
}

const CASES: [string, string, HostContext, DeliveryTarget][] = [
  [
    "a Telegram DM reply chain",
    "agent:main:telegram:direct:8035547811",
    { messageChannel: "telegram", agentAccountId: "bot-main", deliveryContext: { channel: "telegram", to: "8035547811", accountId: "bot-main" }, message: { messageId: 4711, replyToId: 4710 } },
    { channel: "telegram", to: "8035547811", accountId: "bot-main", replyToMessageId: "4711" },
  ],
  [
    "a Telegram forum topic",
    "agent:main:telegram:group:-1001234567890:topic:42",
    { messageChannel: "telegram", deliveryContext: { channel: "telegram", to: "-1001234567890", threadId: 42 }, message: { messageId: 99, threadId: 42 } },
    { channel: "telegram", to: "-1001234567890", topicId: "42", replyToMessageId: "99" },
  ],
  [
    "a Discord thread",
    "agent:main:discord:channel:1100000000000000001:thread:1200000000000000002",
    { messageChannel: "discord", deliveryContext: { channel: "discord", to: "channel:1100000000000000001", accountId: "default", threadId: "1200000000000000002" }, message: { messageId: "1300" } },
    { channel: "discord", to: "channel:1100000000000000001", accountId: "default", threadId: "1200000000000000002" },
  ],
  [
    "a Slack thread",
    "agent:main:slack:channel:c0123abc:thread:1700000000.000100",
    { messageChannel: "slack", deliveryContext: { channel: "slack", to: "C0123ABC", threadId: "1700000000.000100" }, message: { messageId: "1700000000.000200", threadId: "1700000000.000100" } },
    { channel: "slack", to: "C0123ABC", threadId: "1700000000.000100" },
  ],
];

describe("origin through three hops", () => {
  it.each(CASES)("announces into %s, where the conversation started", async (_name, userKey, host, expected) => {
    const [ma, mb, mc] = await threeGateways();
    const a = await ma.sessions.open(userKey);
    const b = await mb.sessions.open("agent:planner:main");
    const c = await mc.sessions.open("agent:analyst:main");
    cleanups.push(() => Promise.all([a.close(), b.close(), c.close()]));

    const { origin, taskAB } = await threeHops(a, host, b, c, { result: "April: 412 units billed", action: "announce" });
    expect(origin).toMatchObject({ ...expected, session: { instance: "gw-a" } });

    const announced = await deliverAnnounces(a);
    expect(announced).toEqual([{ target: expected, text: "April: 412 units billed" }]);

    // B tells A it is done with a legacy token amid chatter: a skip. A's model is told nothing (the
    // completion is recorded as surfaced, never shown), nothing is announced, no token is stored.
    const bDone = await tool("mesh_complete").execute({ taskId: taskAB, status: "completed", result: "🎯 Result received. REPLY_SKIP" }, { session: b });
    expect(bDone.text).toContain("(silently: nothing posted)");
    expect(await ma.tasks.get(taskAB)).toMatchObject({ action: "skip", result: "🎯 Result received." });
    expect((await a.take()).messages).toEqual([]);
    expect(a.inbox.surfaced("gw-b", ReservedIds.taskComplete(taskAB))).toBe(true);
  });
});

describe("origin across turns", () => {
  it("keeps the user's conversation when the middle agent delegates in a later turn, after its gateway restarted", async () => {
    const prefix = uniquePrefix();
    const [ma, mb, mc] = await threeGateways(prefix);
    const a = await ma.sessions.open("agent:main:telegram:direct:8035547811");
    const c = await mc.sessions.open("agent:analyst:main");
    cleanups.push(() => Promise.all([a.close(), c.close()]));
    const origin = originFromHostContext(a.address, CASES[0]![2])!;
    expect((await tool("mesh_delegate").execute({ sessionKey: "agent:planner:main", instance: "gw-b", message: "get the April numbers" }, { session: a, origin })).ok).toBe(true);

    // Turn 1 of B: it takes the request and ends.
    const b1 = await mb.sessions.open("agent:planner:main");
    const taken = await b1.take();
    await taken.confirm();
    await b1.close();
    await mb.close();

    // Turn 2, in a restarted gateway: B's own context points at its own channel; the work keeps A's origin.
    const mb2 = await openMesh(server, { prefix, instance: "gw-b", channelPolicyFile: policyFile });
    cleanups.push(() => mb2.close());
    const b2 = await mb2.sessions.open("agent:planner:main");
    cleanups.push(() => b2.close());
    const bOwn = originFromHostContext(b2.address, { deliveryContext: { channel: "discord", to: "channel:b-home" } });
    expect((await tool("mesh_delegate").execute({ sessionKey: c.sessionKey, instance: "gw-c", message: "crunch them" }, { session: b2, ...(bOwn && { origin: bOwn }) })).ok).toBe(true);
    const cBatch = await c.take();
    await cBatch.confirm();
    expect(cBatch.messages[0]!.envelope.origin).toEqual(origin);
    await tool("mesh_complete").execute({ taskId: cBatch.messages[0]!.taskId!, status: "completed", result: "April: 412", action: "announce" }, { session: c });
    expect(await deliverAnnounces(a)).toEqual([{ target: CASES[0]![3], text: "April: 412" }]);
  });
});

describe("routing overrides", () => {
  it("lets an allowed override win over the inherited origin", async () => {
    const [ma, mb, mc] = await threeGateways();
    const a = await ma.sessions.open("agent:main:telegram:direct:8035547811");
    const b = await mb.sessions.open("agent:planner:main");
    const c = await mc.sessions.open("agent:analyst:main");
    cleanups.push(() => Promise.all([a.close(), b.close(), c.close()]));
    await threeHops(a, CASES[0]![2], b, c, { result: "posted to ops", action: "announce", announceTarget: "telegram:-100777", announceThreadId: "12" });
    // Same platform: the conversation's bot account carries over to the new chat.
    expect(await deliverAnnounces(a)).toEqual([{ target: { channel: "telegram", to: "-100777", accountId: "bot-main", topicId: "12" }, text: "posted to ops" }]);
  });

  it("hands an override on another platform to a gateway that delivers there, and refuses one no gateway can deliver", async () => {
    const prefix = uniquePrefix();
    const [ma, mb, mc] = await threeGateways(prefix);
    const ms = await openMesh(server, { prefix, instance: "gw-slack", channelPolicyFile: policyFile });
    cleanups.push(() => ms.close());
    await ms.channels.bind("slack:C0OPS1", "agent:ops:slack:channel:c0ops1");
    const a = await ma.sessions.open("agent:main:telegram:direct:8035547811");
    const b = await mb.sessions.open("agent:planner:main");
    const c = await mc.sessions.open("agent:analyst:main");
    const s = await ms.sessions.open("agent:ops:slack:channel:c0ops1");
    cleanups.push(() => Promise.all([a.close(), b.close(), c.close(), s.close()]));
    const { taskBC } = await threeHops(a, CASES[0]![2], b, c, { result: "posted to ops", action: "announce", announceTarget: "slack:C0OPS1" });
    // The Slack-capable gateway posts it; the Telegram conversation's gateway gets no announce it could not deliver.
    expect(await deliverAnnounces(s)).toEqual([{ target: { channel: "slack", to: "C0OPS1" }, text: "posted to ops" }]);
    expect(await deliverAnnounces(a)).toEqual([]);
    expect(await mc.tasks.get(taskBC)).toMatchObject({ announceVia: { instance: "gw-slack", agent: "ops" } });

    // Another Slack chat: a gateway that delivers on Slack still takes it.
    const b2 = await mb.sessions.open("agent:planner:second");
    cleanups.push(() => b2.close());
    const { done } = await threeHops(a, CASES[0]![2], b2, c, { result: "x", action: "announce", announceTarget: "slack:C0OPS2", announceThreadId: "1" });
    expect(done).toMatchObject({ ok: true });
    expect(await deliverAnnounces(s)).toEqual([{ target: { channel: "slack", to: "C0OPS2", threadId: "1" }, text: "x" }]);
    // No gateway delivers on Slack any more: refused before anything is decided.
    await ms.channels.unbind("slack:C0OPS1", "agent:ops:slack:channel:c0ops1");
    const b3 = await mb.sessions.open("agent:planner:third");
    cleanups.push(() => b3.close());
    const refused = await threeHops(a, CASES[0]![2], b3, c, { result: "y", action: "announce", announceTarget: "slack:C0OPS3" });
    expect(refused.done).toMatchObject({ ok: false, details: { error: "no_delivery_route" } });
    expect((await mc.tasks.get(refused.taskBC))?.state).toBe("submitted");
  });

  it("refuses a forbidden override with a clear error and delivers nothing", async () => {
    const [ma, mb, mc] = await threeGateways();
    const a = await ma.sessions.open("agent:main:telegram:direct:8035547811");
    const b = await mb.sessions.open("agent:planner:main");
    const c = await mc.sessions.open("agent:analyst:main");
    cleanups.push(() => Promise.all([a.close(), b.close(), c.close()]));
    const { taskBC, done } = await threeHops(a, CASES[0]![2], b, c, { result: "leak", action: "announce", announceTarget: "telegram:-100666" });
    expect(done).toMatchObject({ ok: false, details: { error: "forbidden_route" } });
    expect(done.text).toContain("announcing to telegram:-100666 is not allowed: the channel policy denies it (telegram:-100666). Nothing was sent");
    const elsewhere = await c.complete({ taskId: taskBC, state: "completed", result: "x", action: "announce", announceTarget: "discord:999" }).catch((e: unknown) => e);
    expect(elsewhere).toBeInstanceOf(ForbiddenRouteError);
    expect((elsewhere as Error).message).toContain("the channel policy allows only telegram:-100*, slack:C0OPS*");

    // Nothing recorded, nothing delivered: the task is still open, no inbox got anything.
    expect((await mc.tasks.get(taskBC))?.state).toBe("submitted");
    expect((await b.take()).messages).toEqual([]);
    expect(await deliverAnnounces(a)).toEqual([]);
  });

  it("allows a thread override inside the conversation's own chat without a policy entry", async () => {
    const [ma, mb, mc] = await threeGateways();
    const a = await ma.sessions.open("agent:main:slack:channel:c0123abc:thread:1700000000.000100");
    const b = await mb.sessions.open("agent:planner:main");
    const c = await mc.sessions.open("agent:analyst:main");
    cleanups.push(() => Promise.all([a.close(), b.close(), c.close()]));
    await threeHops(a, CASES[3]![2], b, c, { result: "in a new thread", action: "announce", announceThreadId: "1700000000.999999" });
    expect(await deliverAnnounces(a)).toEqual([{ target: { channel: "slack", to: "C0123ABC", threadId: "1700000000.999999" }, text: "in a new thread" }]);
  });

  it("rejects a policy file with a clear error naming the field", async () => {
    const bad = join(mkdtempSync(join(tmpdir(), "clawmesh-policy-")), "bad.json");
    writeFileSync(bad, JSON.stringify({ announce: { allow: ["no-colon"] } }));
    await expect(openMesh(server, { prefix: uniquePrefix(), instance: "gw1", channelPolicyFile: bad })).rejects.toThrow(/invalid channel policy .*bad\.json: announce\.allow\.0: a pattern is <platform>:<chat>/);
  });
});

