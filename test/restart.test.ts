import { describe, expect, it } from "vitest";
import { NoRespondersError, PermissionViolationError, RequestError, TimeoutError, type Status } from "@nats-io/transport-node";
import { Mesh, MeshConfigSchema, SendFailedError, ValidationError, meshTools, parseSessionKey, type MeshTool } from "../src/index.js";
import { failureResult } from "../src/tools/tool.js";
import { isBusUnreachable, isNotPermitted } from "../src/transport/js-errors.js";
import { useServer } from "./harness/suite.js";
import { fastInbox, inspect, smallRetention, uniquePrefix } from "./harness/mesh.js";
import { Latch } from "./harness/agents.js";

const s = useServer();

/** The requirement: a live wait sees what landed within this long of the server being back. */
const RESUME_LIMIT_MS = 2000;

/** A mesh connected with the library's own reconnect defaults (no harness overrides). */
async function defaultMesh(prefix: string, instance: string): Promise<Mesh> {
  const m = await Mesh.connect({ servers: s.server.url, instance, prefix, retention: smallRetention, inbox: fastInbox });
  // Cleanups run in reverse: the mesh closes, then its prefix's streams are removed.
  s.cleanup(async () => (await inspect(s.server, prefix)).removePrefix());
  s.cleanup(() => m.close());
  return m;
}

/** Resolves with the first status event matching `pick` (or a close, which `pick` may reject). */
function nextStatus(mesh: Mesh, pick: (st: Status, seen: number) => boolean): Promise<{ status: Status; seen: number }> {
  return (async () => {
    let seen = 0;
    for await (const st of mesh.status()) {
      seen++;
      if (st.type === "close" || pick(st, seen)) return { status: st, seen };
    }
    throw new Error("status events ended");
  })();
}

const tool = (name: string): MeshTool => meshTools.find((t) => t.name === name)!;

describe("connection failures in tool results", () => {
  it("tells a connection problem from a refusal by error class", () => {
    expect(isBusUnreachable(new TimeoutError())).toBe(true);
    expect(isBusUnreachable(new SendFailedError("m1", new TimeoutError()))).toBe(true);
    const noResponders = new RequestError("no responders", { cause: new NoRespondersError("$JS.API.INFO") });
    expect(isBusUnreachable(noResponders, { connected: false })).toBe(true);
    expect(isBusUnreachable(noResponders, { connected: true })).toBe(false);
    const refused = new PermissionViolationError("Permissions Violation for Publish to mesh.in.gw2.gw1.a.main.=.msg", "publish", "mesh.in.gw2.gw1.a.main.=.msg");
    expect(isNotPermitted(new RequestError("refused", { cause: refused }))).toBe(true);
    expect(isBusUnreachable(new RequestError("refused", { cause: refused }))).toBe(false);

    expect(failureResult("mesh_send", new TimeoutError(), false)).toMatchObject({ ok: false, details: { error: "bus_unreachable" } });
    const notPermitted = failureResult("mesh_send", refused, true)!;
    expect(notPermitted).toMatchObject({ ok: false, details: { error: "not_permitted" } });
    expect(notPermitted.text).toMatch(/configuration problem/);
    expect(failureResult("mesh_send", new Error("a bug"), true)).toBeUndefined();
    // A registry read no stream answered while connected (a clustered bucket electing its leader): try again shortly.
    expect(failureResult("mesh_await", noResponders, true)).toMatchObject({ ok: false, details: { error: "bus_unreachable" } });
  });
});

describe("reconnect policy", () => {
  it("reconnects forever by default, with a short wait, and validates what it is given", async () => {
    expect(MeshConfigSchema.parse({ instance: "gw1" }).reconnect).toEqual({ maxAttempts: -1, timeWaitMs: 250, jitterMs: 100 });
    await expect(Mesh.connect({ servers: s.server.url, instance: "gw1", reconnect: { maxAttempts: 0 } })).rejects.toBeInstanceOf(ValidationError);

    const m = await defaultMesh(uniquePrefix(), "gw1");
    // The client's own default gives up after 10 failed attempts per server; keep the server down
    // past a few more than that and the connection must still be trying.
    const beyondDefault = nextStatus(m, (_st, seen) => seen > 12);
    await s.server.kill();
    const attempts = await beyondDefault;
    expect(attempts.status.type).toBe("reconnecting");
    expect(m.isClosed).toBe(false);

    const back = nextStatus(m, (st) => st.type === "reconnect");
    await s.server.restart();
    expect((await back).status.type).toBe("reconnect");
    expect((await m.send({ from: "agent:a:main", to: "agent:b:main", body: "after the outage" })).duplicate).toBe(false);
  });
});

describe("live waits across a server restart", () => {
  it("returns a completion written right after a restart to a live await within 2 s of the server being back", async ({ annotate }) => {
    const prefix = uniquePrefix();
    const waiter = await defaultMesh(prefix, "gw1");
    const writer = await s.mesh(prefix, "gw2");
    const worker = parseSessionKey("agent:worker:main", "gw2");
    const run = await waiter.sessions.open("agent:lead:main");
    s.cleanup(() => run.close());
    const slow = await run.delegate({ to: worker, message: "finish after the restart" });
    const early = await run.delegate({ to: worker, message: "already finished" });
    await writer.tasks.finish({ taskId: early.taskId, by: worker, state: "completed", result: "early" });

    // The already-finished target is read last: its result means the await is past its first read.
    const listening = new Latch();
    const awaited = run.await([{ taskId: slow.taskId }, { taskId: early.taskId }], {
      timeoutMs: 60_000,
      onResult: (i) => i.taskId === early.taskId && listening.open(),
    });
    await listening.opened;

    await s.server.kill();
    await s.server.restart();
    const back = Date.now();
    await writer.tasks.finish({ taskId: slow.taskId, by: worker, state: "completed", result: { rows: 3 } });
    const r = await awaited;
    const latency = Date.now() - back;
    await annotate(`await returned ${latency} ms after the server was back`);

    expect(r.timedOut).toBe(false);
    expect(r.done.find((d) => d.taskId === slow.taskId)).toMatchObject({ state: "completed", result: { rows: 3 }, surfaced: "await" });
    expect(latency).toBeLessThanOrEqual(RESUME_LIMIT_MS);
    // Returned by the await, so the inbox does not show it again.
    const batch = await run.take();
    expect(batch.messages.filter((m) => m.taskId === slow.taskId)).toEqual([]);
    await batch.confirm();
  });

  it("returns an inline reply sent right after a restart to a send that is still waiting", async ({ annotate }) => {
    const prefix = uniquePrefix();
    const asker = await defaultMesh(prefix, "gw1");
    const other = await s.mesh(prefix, "gw2");
    const caller = await asker.sessions.open("agent:asker:main");
    s.cleanup(() => caller.close());
    const responder = await other.sessions.open("agent:answerer:main");
    s.cleanup(() => responder.close());

    const arrival = responder.nextArrival();
    const asked = caller.send({ to: parseSessionKey("agent:answerer:main", "gw2"), body: "still there?", waitMs: 60_000 });
    await arrival;
    const batch = await responder.take();
    expect(batch.messages.map((m) => m.body)).toEqual(["still there?"]);
    await batch.confirm();

    await s.server.kill();
    await s.server.restart();
    const back = Date.now();
    await responder.reply(batch.messages[0]!, "yes, after the restart");
    const out = await asked;
    const latency = Date.now() - back;
    await annotate(`inline reply returned ${latency} ms after the server was back`);

    expect(out).toMatchObject({ status: "replied", reply: "yes, after the restart" });
    expect(latency).toBeLessThanOrEqual(RESUME_LIMIT_MS);
  });

  it("answers a tool call made while the server is down with a readable result instead of throwing", async () => {
    const prefix = uniquePrefix();
    // One try per send here, so the unacknowledged send is reported without the usual retries.
    const m = await s.mesh(prefix, "gw1", { sendRetryMs: 0 });
    const run = await m.sessions.open("agent:lead:main");
    s.cleanup(() => run.close());
    const task = await run.delegate({ to: parseSessionKey("agent:worker:main", "gw1"), message: "never finished" });

    await s.server.kill();
    try {
      const [awaited, sent] = await Promise.all([
        tool("mesh_await").execute({ taskIds: [task.taskId], timeoutSeconds: 30 }, { session: run }),
        tool("mesh_send").execute({ sessionKey: "agent:other:main", message: "anyone?" }, { session: run }),
      ]);
      for (const r of [awaited, sent]) {
        expect(r).toMatchObject({ ok: false, details: { error: "bus_unreachable" } });
        expect(r.text).toMatch(/message bus is unreachable.*Nothing already delivered was lost.*Try again shortly/s);
      }
    } finally {
      await s.server.restart();
    }
  });
});
