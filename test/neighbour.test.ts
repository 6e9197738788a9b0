/**
 * A neighbour instance that reuses the ids the mesh reserves for its own facts: it can neither
 * shadow a completion in the recipient's dedup (keyed by the broker-checked sender) nor make the
 * server drop the real one as a duplicate (publish dedup ids are keyed with the sender's secret),
 * nor resolve an await with a completion it has no right to send.
 */
import { describe, expect, it } from "vitest";
import { Kinds, ReservedIds, createEnvelope, encodeEnvelope } from "../src/wire/index.js";
import { inspect, uniquePrefix } from "./harness/mesh.js";
import { useServer } from "./harness/suite.js";

const suite = useServer();

describe("a neighbour reusing reserved ids", () => {
  it("cannot pre-empt, shadow or forge a task's completion", async () => {
    const prefix = uniquePrefix();
    const a = await suite.mesh(prefix, "gw-a");
    const c = await suite.mesh(prefix, "gw-c");
    await suite.mesh(prefix, "gw-b");
    const boss = await a.sessions.open("agent:boss:main");
    const t = await boss.delegate({ to: c.address({ sessionKey: "agent:worker:main", instance: "gw-c" }), message: "the real work" });
    const id = ReservedIds.taskComplete(t.taskId);

    // gw-b, with its own valid identity, publishes first: a plain message named like the completion,
    // carrying the completion's id as its Nats-Msg-Id too, and a forged task.complete of its own.
    const ins = await inspect(suite.server, prefix);
    const raw = async (kind: string, body: unknown, msgID: string) => {
      const env = createEnvelope({ id, kind, from: { instance: "gw-b", agent: "mallory", channel: "main", session: "" }, to: boss.address, taskId: t.taskId, body: body as never });
      await ins.js.publish(ins.names.inboxSubject(boss.address, "gw-b", kind), encodeEnvelope(env, 1 << 20, 1 << 20), { msgID });
    };
    await raw(Kinds.message, "not a completion", id);
    await raw(Kinds.taskComplete, { taskId: t.taskId, state: "completed", result: "forged", assignee: "agent:worker:main" }, `${id}-forged`);

    // The forged event does not resolve an await: the registry has no decision yet.
    const early = await boss.await([{ taskId: t.taskId }], { timeoutMs: 300 });
    expect(early.done).toEqual([]);

    // The real completion is stored although its envelope id was used first.
    const worker = await c.sessions.open("agent:worker:main");
    const req = await worker.take();
    await req.confirm();
    const out = await worker.complete({ taskId: t.taskId, state: "completed", result: "real" });
    expect(out.outcome).toBe("finished");
    await worker.close();

    const r = await boss.await([{ taskId: t.taskId }], { timeoutMs: 10_000 });
    expect(r.done).toMatchObject([{ taskId: t.taskId, state: "completed", result: "real", surfaced: "await" }]);
    const batch = await boss.take();
    // The forged completion is shown for what it is (from gw-b), the plain one parked; the real one, claimed by the await, never again.
    expect(batch.messages.map((m) => [m.kind, m.from.instance, (m.body as { result?: string }).result])).toEqual([[Kinds.taskComplete, "gw-b", "forged"]]);
    await batch.confirm();
    expect((await a.parked.list()).map((p) => p.reason)).toEqual(["reserved_id"]);
    expect(await ins.storedInbox("gw-a")).toBe(3);
    await boss.close();
  });
});
