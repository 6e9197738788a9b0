/**
 * clawmesh inside real OpenClaw gateways (openclaw 2026.9.x on Node 24), two of them with their own
 * state dirs and an agent named `main` each, a scripted model and a real nats-server with
 * authorization on: each gateway connects as its own user (`generateAuthorization`), its streams
 * provisioned beforehand with the operator credential, as in production.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { LocalNatsServer } from "../../src/server/local-server.js";
import { decodeEnvelope, type Envelope, type SessionRecord } from "../../src/wire/index.js";
import { generateAuthorization } from "../../src/topology/index.js";
import { Mesh } from "../../src/index.js";
import { Latch } from "../harness/agents.js";
import { ensureOpenClaw, Gateway } from "./openclaw.js";
import { ScriptedModel, lastUserText, newestText, textOf, type ModelRequest } from "./model-server.js";

const PREFIX = "e2e";
/** One NATS user per gateway, and the operator (provisioning, and this test's own observer connection). */
const PASSWORDS = { "gw-a": "gw-a-secret-123", "gw-b": "gw-b-secret-123" } as const;
const OPERATOR = { user: "ops", password: "ops-secret-123" };
let nats: LocalNatsServer;
let nc: NatsConnection;
let model: ScriptedModel;
let gwA: Gateway;
let gwB: Gateway;
const timings: string[] = [];

/** Resolves with the next envelope stored on a subject pattern (core subscription sees stream publishes). */
function nextEnvelope(subject: string, match: (kind: string) => boolean = () => true): Promise<{ id: string; kind: string; at: number }> {
  return new Promise((resolve) => {
    const sub = nc.subscribe(subject, {
      callback: (_e, m) => {
        const d = decodeEnvelope(m.data, 1 << 20);
        if (!d.ok || !match(d.envelope.kind)) return;
        sub.unsubscribe();
        resolve({ id: d.envelope.id, kind: d.envelope.kind, at: Date.now() });
      },
    });
  });
}

/** Resolves with the next envelope stored on a subject pattern that `match` accepts, whole. */
function nextWhere(subject: string, match: (e: Envelope) => boolean): Promise<Envelope> {
  return new Promise((resolve) => {
    const sub = nc.subscribe(subject, {
      callback: (_e, m) => {
        const d = decodeEnvelope(m.data, 1 << 20);
        if (!d.ok || !match(d.envelope)) return;
        sub.unsubscribe();
        resolve(d.envelope);
      },
    });
  });
}

/**
 * Resolves with a session's record once `match` accepts it: read again (operator connection) at
 * every write to a KV bucket, so it waits on the write, not on time.
 */
async function recordWhere(sessionKey: string, instance: string, match: (r: SessionRecord | undefined) => boolean): Promise<SessionRecord | undefined> {
  const ops = await Mesh.connect({ servers: nats.url, prefix: PREFIX, instance: "ops", provision: false, auth: { user: OPERATOR.user, password: OPERATOR.password } });
  const writes = nc.subscribe("$KV.>");
  try {
    let r = await ops.sessions.get({ sessionKey, instance });
    if (match(r)) return r;
    for await (const _ of writes) {
      r = await ops.sessions.get({ sessionKey, instance });
      if (match(r)) return r;
    }
    return r;
  } finally {
    writes.unsubscribe();
    await ops.close();
  }
}

/** What the mesh put before a model: tool results and injected blocks. */
const meshText = (r: ModelRequest) =>
  r.messages
    .filter((m) => m.role === "tool" || (m.role === "user" && textOf(m.content).includes("<clawmesh-inbox>")))
    .map((m) => textOf(m.content))
    .join("\n");

/** A legacy skip token, in any case: none may reach a model or a channel. */
const TOKEN = /reply_skip|no_reply|announce_skip/i;

/** A mesh client acting as one of the gateways' instances, with that instance's own credentials. */
function asInstance(instance: keyof typeof PASSWORDS): Promise<Mesh> {
  return Mesh.connect({ servers: nats.url, prefix: PREFIX, instance, auth: { user: instance, password: PASSWORDS[instance] }, registry: { janitorIntervalMs: 0 } });
}

/** The mesh block injected into a request's current prompt (history excluded). */
const injected = (r: ModelRequest) => {
  const t = lastUserText(r.messages);
  return t.includes("<clawmesh-inbox>") ? t.slice(t.indexOf("<clawmesh-inbox>"), t.indexOf("</clawmesh-inbox>")) : "";
};

beforeAll(async () => {
  const t0 = Date.now();
  const install = await ensureOpenClaw();
  timings.push(`openclaw ready ${Date.now() - t0} ms`);
  const dir = mkdtempSync(join(tmpdir(), "clawmesh-e2e-nats-"));
  const authFile = join(dir, "auth.conf");
  writeFileSync(authFile, generateAuthorization({ prefix: PREFIX, instances: { "gw-a": { password: PASSWORDS["gw-a"] }, "gw-b": { password: PASSWORDS["gw-b"] } }, operator: OPERATOR }));
  nats = await LocalNatsServer.start({ storeDir: join(dir, "store"), configFile: authFile });
  nc = await connect({ servers: nats.url, user: OPERATOR.user, pass: OPERATOR.password });
  // Instance users may not create streams: the operator provisions each instance (`clawmesh provision`).
  const ops = await Mesh.connect({ servers: nats.url, prefix: PREFIX, instance: "ops", provision: false, auth: { user: OPERATOR.user, password: OPERATOR.password } });
  await ops.admin.provision("gw-a");
  await ops.admin.provision("gw-b");
  await ops.close();
  model = new ScriptedModel();
  const modelPort = await model.start();
  // B answers whatever was injected for it: the [mesh id=...] of the first message.
  model.define("answer", (req, step) => {
    const id = /\[mesh id=([\w-]+)\]/.exec(lastUserText(req.messages))?.[1];
    if (step === 0 && id) return { calls: [{ name: "mesh_send", args: { replyTo: id, message: "pong from B" } }] };
    return { text: "answered" };
  });
  model.define("plain", () => ({ text: "ok" }));
  const t1 = Date.now();
  const auth = (instance: keyof typeof PASSWORDS) => ({ auth: { user: instance, password: PASSWORDS[instance] } });
  [gwA, gwB] = await Promise.all([
    // gw-a wakes its idle sessions for the default kinds. A failed provider call is retried once on
    // the same model, then OpenClaw fails over to fake/backup (the provider-error test).
    Gateway.start(install, { instance: "gw-a", natsUrl: nats.url, prefix: PREFIX, modelPort, pluginConfig: auth("gw-a"), fallbacks: ["fake/backup"], providerMaxRetries: 1 }),
    // gw-b is not woken by plain messages: the tests choose when its sessions answer them.
    Gateway.start(install, { instance: "gw-b", natsUrl: nats.url, prefix: PREFIX, modelPort, pluginConfig: { ...auth("gw-b"), wakeOn: ["task.complete", "watch.event", "reply"] } }),
  ]);
  timings.push(`two gateways ready ${Date.now() - t1} ms`);
});

afterAll(async () => {
  if (process.env.CLAWMESH_E2E_DEBUG) {
    const { writeFileSync } = await import("node:fs");
    writeFileSync(join(tmpdir(), "clawmesh-e2e-model-requests.json"), JSON.stringify(model.requests, null, 1));
  }
  await Promise.all([gwA?.dispose(), gwB?.dispose()]);
  await nc?.close();
  await model?.stop();
  await nats?.stop();
  console.log(`e2e timings: ${timings.join("; ")}`);
});

describe("clawmesh in real OpenClaw gateways", () => {
  it("delivers the model's mesh_send to a session on the other gateway and brings the reply back inline", async () => {
    model.define("ask", (req, step) => {
      if (step === 0) return { calls: [{ name: "mesh_send", args: { sessionKey: "agent:main:main", instance: "gw-b", message: "ping from A", timeoutSeconds: 120 } }] };
      const tool = req.messages.filter((m) => m.role === "tool").at(-1);
      return { text: `A got: ${textOf(tool?.content)}` };
    });
    const landed = nextEnvelope(`${PREFIX}.in.gw-b.gw-a.main.main.=.>`);
    const t = Date.now();
    const turnA = gwA.turn("agent:main:main", "ask B SCRIPT=ask");
    await landed;
    await gwB.turn("agent:main:main", "you have mail SCRIPT=answer");
    const a = await turnA;
    timings.push(`cross-gateway request/reply turn ${Date.now() - t} ms`);
    expect(a.text).toContain("A got: Reply from agent:main:main: pong from B");
  });

  it("seed 000: parallel sends to a fast and a slow session; the slow pingback wakes the idle caller and is shown exactly once, also across a gateway restart", async () => {
    const fastKey = "agent:main:telegram:direct:1001";
    const slowKey = "agent:main:telegram:direct:1002";
    const caller = "agent:main:cron:billing";
    model.define("fanout", (req, step) => {
      if (step === 0)
        return {
          calls: [
            { name: "mesh_send", args: { sessionKey: fastKey, instance: "gw-b", message: "occupancy?", timeoutSeconds: 120 } },
            { name: "mesh_send", args: { sessionKey: slowKey, instance: "gw-b", message: "municode?", timeoutSeconds: 1 } },
          ],
        };
      return { text: `fanout done: ${req.messages.filter((m) => m.role === "tool").map((m) => textOf(m.content)).join(" | ")}` };
    });
    const toFast = nextEnvelope(`${PREFIX}.in.gw-b.gw-a.main.telegram.direct=3A1001.>`);
    const toSlow = nextEnvelope(`${PREFIX}.in.gw-b.gw-a.main.telegram.direct=3A1002.>`);
    const fastReply = nextEnvelope(`${PREFIX}.in.gw-a.gw-b.main.cron.billing.>`, (k) => k === "reply");
    const turn1 = gwA.turn(`${caller}:run:r1`, "monthly billing SCRIPT=fanout");
    await Promise.all([toFast, toSlow]);
    const slowGate = new Latch();
    await gwB.turn(fastKey, "SCRIPT=answer");
    const fast = await fastReply;
    slowGate.open(); // the slow callee answers only after the fast reply was observed
    const first = await turn1;
    expect(first.text).toContain("Reply from agent:main:telegram:direct:1001: pong from B");
    expect(first.text).toContain("Any reply will be delivered to this session automatically");

    await slowGate.opened;
    const pingback = nextEnvelope(`${PREFIX}.in.gw-a.gw-b.main.cron.billing.>`, (k) => k === "reply");
    await gwB.turn(slowKey, "SCRIPT=answer");
    const slow = await pingback;
    // The caller is idle (its run ended): the pingback starts a turn of its own, with no user message.
    const woken = await model.waitFor((r) => injected(r).includes(slow.id));
    expect(lastUserText(woken.messages)).not.toContain("SCRIPT=");

    // A message stored while gw-a is down wakes its session when gw-a is back.
    const downKey = "agent:main:telegram:direct:2001";
    const t = Date.now();
    await gwA.stop();
    const other = await asInstance("gw-b");
    const whileDown = await other.send({ from: "agent:helper:main", to: { sessionKey: downKey, instance: "gw-a" }, body: "stored while gw-a was down" });
    await other.close();
    await gwA.relaunch();
    await model.waitFor((r) => injected(r).includes(whileDown.id));
    timings.push(`gateway restart to wake ${Date.now() - t} ms`);
    await gwA.turn(`${caller}:run:r2`, "next run SCRIPT=plain");

    const callerRequests = model.requests.filter((r) => JSON.stringify(r.messages).includes(slow.id) || lastUserText(r.messages).includes("SCRIPT=fanout"));
    // Shown once, in the wake; never before it was stored, never again (also across the restart).
    expect(model.requests.filter((r) => injected(r).includes(slow.id))).toEqual([woken]);
    expect(callerRequests.filter((r) => r.at < slow.at && JSON.stringify(r.messages).includes(slow.id))).toEqual([]);
    expect(model.requests.filter((r) => injected(r).includes(whileDown.id))).toHaveLength(1);
    // The fast reply came inline and is never injected again.
    expect(model.requests.filter((r) => injected(r).includes(fast.id))).toEqual([]);
    expect(gwA.wakesOf(caller)).toBe(1);
    expect(gwA.wakesOf(downKey)).toBe(1);
  });

  it("delegate, watch and await across gateways: B's model completes the task, A's await returns its result, A's watch notice reaches A's model once", async () => {
    const key = "agent:main:main:thread:await";
    const worker = "agent:main:main:thread:worker";
    model.define("delegate-watch-await", (req, step) => {
      const lastTool = textOf(req.messages.filter((m) => m.role === "tool").at(-1)?.content);
      if (step === 0) return { calls: [{ name: "mesh_delegate", args: { sessionKey: worker, instance: "gw-b", message: "what is 2+2?" } }] };
      const taskId = /Task (\S+) delegated/.exec(textOf(req.messages.filter((m) => m.role === "tool")[0]?.content))?.[1];
      if (step === 1) return { calls: [{ name: "mesh_watch", args: { taskId, events: ["completed"] } }] };
      if (step === 2) return { calls: [{ name: "mesh_await", args: { taskIds: [taskId], timeoutSeconds: 120 } }] };
      return { text: `A got: ${lastTool}` };
    });
    model.define("complete", (req, step) => {
      const taskId = /\[mesh id=tr-([\w-]+)\]/.exec(lastUserText(req.messages))?.[1];
      if (step === 0 && taskId) return { calls: [{ name: "mesh_complete", args: { taskId, status: "completed", result: "four" } }] };
      return { text: "completed" };
    });
    const request = nextEnvelope(`${PREFIX}.in.gw-b.gw-a.main.main.>`, (k) => k === "task.request");
    const notice = nextEnvelope(`${PREFIX}.in.gw-a.gw-b.>`, (k) => k === "watch.event");
    const turnA = gwA.turn(key, "ask B and wait SCRIPT=delegate-watch-await");
    await request;
    await gwB.turn(worker, "you have work SCRIPT=complete");
    const a = await turnA;
    expect(a.text).toContain("A got:");
    expect(a.text).toContain("four");
    // The notice landed while A's turn ran: it is in that turn's next model request (appended to the
    // await's tool result), and never in another.
    const we = await notice;
    const carries = (r: ModelRequest) => newestText(r).includes(`[mesh id=${we.id}]`);
    const shown = await model.waitFor(carries);
    await gwA.turn(key, "later SCRIPT=plain");
    expect(model.requests.filter(carries)).toEqual([shown]);
  });

  it("mid-turn: a pingback that arrives while the turn runs a non-mesh tool is in that turn's next model request", async () => {
    const key = "agent:main:main:thread:mid";
    const thinking = new Latch();
    const release = new Latch();
    model.define("midturn", async (_req, step) => {
      if (step === 0) {
        thinking.open();
        await release.opened;
        return { calls: [{ name: "session_status", args: {} }] };
      }
      return { text: "done" };
    });
    const turn = gwA.turn(key, "work SCRIPT=midturn");
    await thinking.opened;
    // While the turn is running (its prompt already built), a message lands for it.
    const landed = nextEnvelope(`${PREFIX}.in.gw-a.gw-b.main.main.thread=3Amid.>`);
    const other = await asInstance("gw-b");
    await other.send({ from: "agent:helper:main", to: { sessionKey: key, instance: "gw-a" }, body: "mid-turn news" });
    const env = await landed;
    await other.close();
    release.open();
    await turn;
    const steps = model.requests.filter((r) => lastUserText(r.messages).includes("work SCRIPT=midturn"));
    const afterTool = steps.at(-1)!;
    const toolMsg = afterTool.messages.filter((m) => m.role === "tool").at(-1);
    expect(textOf(toolMsg?.content)).toContain(`[mesh id=${env.id}]`);
    expect(textOf(toolMsg?.content)).toContain("mid-turn news");
    expect(steps.filter((r) => injected(r).includes(env.id))).toEqual([]);
    // A busy session gets no second turn: the running turn showed it, and its end found nothing to wake for.
    await gwA.turn(key, "after SCRIPT=plain");
    expect(model.requests.filter((r) => injected(r).includes(env.id))).toEqual([]);
    expect(gwA.wakesOf(key)).toBe(0);
  });

  it("provider error: a message for an idle session whose woken turn's first model request gets HTTP 500, its retry 429, and the failover succeeds reaches exactly one successful model request", async () => {
    const key = "agent:main:main:thread:flaky";
    const landed = nextEnvelope(`${PREFIX}.in.gw-a.gw-b.main.main.thread=3Aflaky.>`);
    const carries = (r: ModelRequest) => JSON.stringify(r.messages).includes("flaky news");
    // openclaw 2026.9.6 retries a failed attempt on the same model (500 is server_error, 429
    // rate_limit: backoff 1 s, then 2 s, ±50%) up to retry.provider.maxRetries (default 8, 9 after a
    // 429, within 90 s) before it fails over to a fallback model; gw-a allows one such retry, so the
    // 500 is retried on fake/scripted, the 429 ends that model's turn, and fake/backup gets the attempt.
    model.failOnce(carries, 500);
    model.failOnce(carries, 429);
    const other = await asInstance("gw-b");
    await other.send({ from: "agent:helper:main", to: { sessionKey: key, instance: "gw-a" }, body: "flaky news" });
    const env = await landed;
    await other.close();
    const t = Date.now();
    await model.waitFor((r) => carries(r) && r.failedWith === undefined);
    await gwA.turn(key, "next turn SCRIPT=plain");
    timings.push(`500, 429, failover wake and turn ${Date.now() - t} ms`);
    const carrying = model.requests.filter(carries);
    expect(carrying.filter((r) => r.failedWith !== undefined).map((r) => [r.failedWith, r.model])).toEqual([
      [500, "scripted"],
      [429, "scripted"],
    ]);
    const succeeded = carrying.filter((r) => r.failedWith === undefined);
    // Every attempt showed the block (the retry's and the failover's prompt builds got it again)...
    for (const r of carrying.slice(0, 3)) expect(injected(r)).toContain(`[mesh id=${env.id}]`);
    // ...and exactly one successful request did: the failover's, on the fallback model.
    const shown = succeeded.filter((r) => injected(r).includes(env.id));
    expect(shown.map((r) => r.model)).toEqual(["backup"]);
  });

  it("seed 001: a sessions_spawn child finishing while the parent is busy reaches the parent through the mesh once, not by the native announce", async () => {
    const parentKey = "agent:main:main:thread:spawner";
    const childDone = nextEnvelope(`${PREFIX}.in.gw-a.gw-a.main.main.thread=3Aspawner.>`, (k) => k === "task.complete");
    const busy = new Latch();
    let completion: { id: string } | undefined;
    model.define("child", () => ({ text: "child result 42" }));
    model.define("spawn", async (req, step) => {
      if (step === 0) return { calls: [{ name: "sessions_spawn", args: { task: "compute the number SCRIPT=child", label: "calc" } }] };
      if (step === 1) {
        const spawned = textOf(req.messages.filter((m) => m.role === "tool").at(-1)?.content);
        if (!spawned.includes("accepted")) return { text: `spawn was not accepted: ${spawned.slice(0, 300)}` };
        // The parent is busy in its turn until the child's completion is stored for it (bounded,
        // so a child that never finishes fails the assertions below instead of hanging the turn).
        busy.open();
        completion = await Promise.race([childDone, new Promise<undefined>((r) => setTimeout(() => r(undefined), 60_000))]);
        return { calls: [{ name: "session_status", args: {} }] };
      }
      return { text: "parent done" };
    });
    const parentTurn = await gwA.turn(parentKey, "fan out SCRIPT=spawn");
    expect(parentTurn.text).toBe("parent done");
    expect(completion).toBeDefined();
    const parentRequests = model.requests.filter((r) => lastUserText(r.messages).includes("SCRIPT=spawn"));
    const withResult = parentRequests.filter((r) => r.messages.some((m) => m.role === "tool" && textOf(m.content).includes(`[mesh id=${completion!.id}]`)));
    expect(withResult.length).toBeGreaterThan(0);
    expect(textOf(withResult[0]!.messages.filter((m) => m.role === "tool").at(-1)?.content)).toContain("child result 42");
    // The native announce would add a user/system message carrying the child's result: none did.
    const all = model.requests.filter((r) => JSON.stringify(r.messages).includes(parentKey));
    const nativeAnnounce = all.filter((r) => r.messages.some((m) => (m.role === "user" || m.role === "system") && textOf(m.content).includes("child result 42")));
    expect(nativeAnnounce).toEqual([]);
  });

  it("wake: an idle session's delegated task completes; exactly one model request shows it, with no user turn", async () => {
    const key = "agent:main:main:thread:waiting";
    const assignee = "agent:ops:main";
    model.define("delegate", (_req, step) => {
      if (step === 0) return { calls: [{ name: "mesh_delegate", args: { sessionKey: assignee, instance: "gw-b", message: "count the rooms" } }] };
      return { text: "delegated" };
    });
    const request = nextEnvelope(`${PREFIX}.in.gw-b.gw-a.ops.main.=.>`, (k) => k === "task.request");
    await gwA.turn(key, "start SCRIPT=delegate");
    const taskId = (await request).id.slice("tr-".length);
    // The assignee (gw-b's own credentials) finishes it after the requester's turn is over.
    const worker = await asInstance("gw-b");
    const t = Date.now();
    await worker.tasks.finish({ taskId, by: { sessionKey: assignee, instance: "gw-b" }, state: "completed", result: "12 rooms" });
    await worker.close();
    const woken = await model.waitFor((r) => injected(r).includes(`tc-${taskId}`));
    timings.push(`completion to woken model request ${Date.now() - t} ms`);
    expect(lastUserText(woken.messages)).not.toContain("SCRIPT=");
    expect(injected(woken)).toContain("12 rooms");
    await gwA.turn(key, "later SCRIPT=plain");
    expect(model.requests.filter((r) => injected(r).includes(`tc-${taskId}`))).toEqual([woken]);
    expect(gwA.wakesOf(key)).toBe(1);
  });

  it("wake: a burst of 10 messages for an idle session starts one turn that shows all of them", async () => {
    const key = "agent:main:main:thread:burst";
    const other = await asInstance("gw-b");
    const sent = await Promise.all(Array.from({ length: 10 }, (_, i) => other.send({ from: "agent:helper:main", to: { sessionKey: key, instance: "gw-a" }, body: `burst item ${i}` })));
    await other.close();
    const woken = await model.waitFor((r) => sent.some((m) => injected(r).includes(m.id)));
    for (const m of sent) expect(injected(woken)).toContain(`[mesh id=${m.id}]`);
    await gwA.turn(key, "after the burst SCRIPT=plain");
    expect(model.requests.filter((r) => sent.some((m) => injected(r).includes(m.id)))).toEqual([woken]);
    expect(gwA.wakesOf(key)).toBe(1);
  });

  it("crash: gateway SIGKILLed while the model holds the request carrying a message; after restart the next turn shows it", async () => {
    const key = "agent:main:main:thread:crash";
    const held = new Latch();
    const release = new Latch();
    let calls = 0;
    // The woken turn's prompt shows the message's body, which names this script.
    model.define("hold", async () => {
      if (++calls === 1) {
        held.open();
        await release.opened;
      }
      return { text: "noted" };
    });
    const other = await asInstance("gw-b");
    const sent = await other.send({ from: "agent:helper:main", to: { sessionKey: key, instance: "gw-a" }, body: "crash news SCRIPT=hold" });
    await other.close();
    const carries = (r: ModelRequest) => injected(r).includes(`[mesh id=${sent.id}]`);
    await held.opened;
    const t = Date.now();
    await gwA.kill();
    release.open();
    await gwA.relaunch();
    // Nothing was confirmed: the message is pending again, wakes the session, and is shown again.
    await model.waitFor((r) => carries(r) && model.requests.filter(carries).indexOf(r) === 1);
    timings.push(`SIGKILL to the message shown again ${Date.now() - t} ms`);
    await gwA.turn(key, "after the crash SCRIPT=plain");
    expect(model.requests.filter(carries)).toHaveLength(2);
  });

  it("skip tokens: a reply and a completion that end in REPLY_SKIP are recorded silently; the requester's model never sees them or a token, nothing with a token is published", async () => {
    const key = "agent:main:main:thread:skipper";
    const noter = "agent:main:main:thread:noter";
    const worker = "agent:main:main:thread:skipworker";
    // Everything stored for any inbox while the test runs: no envelope may carry a token.
    const published: Envelope[] = [];
    const all = nc.subscribe(`${PREFIX}.in.>`, {
      callback: (_e, m) => {
        const d = decodeEnvelope(m.data, 1 << 20);
        if (d.ok) published.push(d.envelope);
      },
    });
    const toSkipper = (e: Envelope) => e.to.session === "thread:skipper" && e.to.instance === "gw-a";
    const reply = nextWhere(`${PREFIX}.in.gw-a.gw-b.>`, (e) => toSkipper(e) && e.kind === "reply");
    const completion = nextWhere(`${PREFIX}.in.gw-a.gw-b.>`, (e) => toSkipper(e) && e.kind === "task.complete");
    const asked = nextEnvelope(`${PREFIX}.in.gw-b.gw-a.main.main.thread=3Anoter.>`);
    const delegated = nextEnvelope(`${PREFIX}.in.gw-b.gw-a.main.main.thread=3Askipworker.>`, (k) => k === "task.request");
    model.define("skipper", (_req, step) => {
      if (step === 0)
        return {
          calls: [
            { name: "mesh_send", args: { sessionKey: noter, instance: "gw-b", message: "please note the meeting" } },
            { name: "mesh_delegate", args: { sessionKey: worker, instance: "gw-b", message: "tidy the notes" } },
          ],
        };
      return { text: "asked two" };
    });
    model.define("skip-reply", (req, step) => {
      const id = /\[mesh id=([\w-]+)\]/.exec(lastUserText(req.messages))?.[1];
      if (step === 0 && id) return { calls: [{ name: "mesh_send", args: { replyTo: id, message: "Noted, will do. REPLY_SKIP" } }] };
      return { text: "noted" };
    });
    model.define("skip-complete", (req, step) => {
      const taskId = /\[mesh id=tr-([\w-]+)\]/.exec(lastUserText(req.messages))?.[1];
      if (step === 0 && taskId) return { calls: [{ name: "mesh_complete", args: { taskId, status: "completed", result: "Done. REPLY_SKIP" } }] };
      return { text: "tidied" };
    });
    try {
      await gwA.turn(key, "ask around SCRIPT=skipper");
      await Promise.all([asked, delegated]);
      await gwB.turn(noter, "SCRIPT=skip-reply");
      await gwB.turn(worker, "SCRIPT=skip-complete");
      const silent = await Promise.all([reply, completion]);
      // Each handoff went through the one rule: the action says skip, the stored text has no token.
      for (const e of silent) {
        expect(e.action, e.kind).toBe("skip");
        expect(JSON.stringify(e.body)).not.toMatch(TOKEN);
      }
      expect(JSON.stringify(silent[0].body)).toContain("Noted, will do.");
      await gwA.turn(key, "anything new? SCRIPT=plain");
      // A skip tells the requester's model nothing: not the token, not the text, not the ids. What
      // the mesh puts before the model is tool results and injected blocks (OpenClaw's own system
      // prompt names NO_REPLY: not ours to check).
      const mine = model.requests.filter((r) => JSON.stringify(r.messages).includes("SCRIPT=skipper"));
      expect(mine.length).toBeGreaterThanOrEqual(3);
      for (const r of mine) {
        const text = meshText(r);
        expect(text).not.toMatch(TOKEN);
        expect(text).not.toContain("Noted, will do");
        for (const e of silent) expect(text).not.toContain(e.id);
      }
      expect(gwA.wakesOf(key)).toBe(0);
      // Nothing published for a channel (no announce) and no envelope with a token in it.
      expect(published.filter((e) => e.kind === "announce")).toEqual([]);
      expect(published.filter((e) => TOKEN.test(JSON.stringify(e.body)))).toEqual([]);
    } finally {
      all.unsubscribe();
    }
  });

  // openclaw 2026.9.6's transcript read (api.runtime.subagent.getSessionMessages, the gateway's
  // display projection) suppresses control tokens: a child whose last reply is "Done. REPLY_SKIP"
  // reads as no reply there. The plugin takes the child's raw final answer from its agent_end.
  it("skip tokens: a sessions_spawn child whose last reply is \"Done. REPLY_SKIP\" finishes silently for its parent", async () => {
    const key = "agent:main:main:thread:skipparent";
    const childEnd = nextWhere(`${PREFIX}.in.gw-a.gw-a.>`, (e) => e.to.session === "thread:skipparent" && e.kind === "task.complete");
    model.define("skipchild", () => ({ text: "Done. REPLY_SKIP" }));
    model.define("skipspawn", (_req, step) => (step === 0 ? { calls: [{ name: "sessions_spawn", args: { task: "archive SCRIPT=skipchild", label: "skipchild" } }] } : { text: "spawned" }));
    await gwA.turn(key, "archive it SCRIPT=skipspawn");
    const env = await childEnd;
    expect(JSON.stringify(env.body)).not.toMatch(TOKEN);
    expect(env.action).toBe("skip");
  });

  it("origin across two turns and three hops: A (telegram 7001) delegates to B, B takes it in one turn and delegates to C in the next, C's announce is addressed to A's chat, not B's", async () => {
    const a = "agent:main:telegram:direct:7001";
    const b = "agent:main:main:thread:hop-b";
    const c = "agent:main:main:thread:hop-c";
    // `--channel telegram --reply-to <chat>` gives a CLI turn OpenClaw's delivery context
    // ({channel: "telegram", to: <chat>}), which the plugin turns into the origin; B has its own chat.
    const fromChat = (chat: string) => ({ args: ["--channel", "telegram", "--reply-to", chat] });
    model.define("hop-a", (_req, step) => {
      if (step === 0) return { calls: [{ name: "mesh_delegate", args: { sessionKey: b, instance: "gw-b", message: "find the venue" } }] };
      return { text: "asked B" };
    });
    model.define("hop-take", () => ({ text: "on it" }));
    model.define("hop-b", (_req, step) => {
      if (step === 0) return { calls: [{ name: "mesh_delegate", args: { sessionKey: c, instance: "gw-a", message: "check the venue's hours" } }] };
      return { text: "asked C" };
    });
    model.define("hop-c", (req, step) => {
      const taskId = /\[mesh id=tr-([\w-]+)\]/.exec(lastUserText(req.messages))?.[1];
      if (step === 0 && taskId) return { calls: [{ name: "mesh_complete", args: { taskId, status: "completed", result: "open 9 to 5", action: "announce" } }] };
      return { text: "announced" };
    });
    const toB = nextWhere(`${PREFIX}.in.gw-b.gw-a.>`, (e) => e.kind === "task.request" && e.to.session === "thread:hop-b");
    await gwA.turn(a, "where do we meet? SCRIPT=hop-a", fromChat("7001"));
    expect((await toB).origin).toMatchObject({ channel: "telegram", to: "7001" });
    // Turn 1: B is shown the request and only acknowledges it (the task stays open in its record).
    await gwB.turn(b, "SCRIPT=hop-take", fromChat("8002"));
    const open = await recordWhere(b, "gw-b", (r) => (r?.openTasks?.length ?? 0) === 1);
    expect(open?.openTasks).toHaveLength(1);
    // Turn 2, a new run: B delegates to C; the origin comes from B's record, not B's own chat.
    const toC = nextWhere(`${PREFIX}.in.gw-a.gw-b.>`, (e) => e.kind === "task.request" && e.to.session === "thread:hop-c");
    await gwB.turn(b, "go on SCRIPT=hop-b", fromChat("8002"));
    expect((await toC).origin).toMatchObject({ channel: "telegram", to: "7001" });
    const announce = nextWhere(`${PREFIX}.in.gw-a.>`, (e) => e.kind === "announce");
    await gwA.turn(c, "SCRIPT=hop-c");
    const env = await announce;
    // Published to A's session (whose gateway owns the chat), addressed to A's chat.
    expect(env.to).toMatchObject({ instance: "gw-a", channel: "telegram", session: "direct:7001" });
    expect(env.body).toMatchObject({ deliveryTarget: { channel: "telegram", to: "7001" }, text: "open 9 to 5" });
    expect(JSON.stringify(env.body)).not.toContain("8002");
  });

  it("timeout recorded: a turn whose model stalls past the run's timeout is lastTurn timeout in the session record", async () => {
    const key = "agent:main:main:thread:stalled";
    const release = new Latch();
    const stalled = new Latch();
    model.define("stall", async () => {
      stalled.open();
      await release.opened;
      return { text: "too late" };
    });
    const t = Date.now();
    try {
      // The CLI reports the timed-out run as a failed command.
      await expect(gwA.turn(key, "SCRIPT=stall", { timeoutSeconds: 3 })).rejects.toThrow();
    } finally {
      release.open();
    }
    await stalled.opened;
    const after = new Date(t).toISOString();
    const record = await recordWhere(key, "gw-a", (r) => r?.lastTurn !== undefined && r.lastTurn.at >= after && r.lifecycle === "idle");
    timings.push(`stalled turn to timeout recorded ${Date.now() - t} ms`);
    expect(record).toMatchObject({ lifecycle: "idle", resumable: true, lastTurn: { outcome: "timeout" } });
  });

  it("gives the model a clear error when NATS is down, and the gateway stays healthy", async () => {
    model.define("down", (req, step) => {
      if (step === 0) return { calls: [{ name: "mesh_send", args: { agentId: "main", instance: "gw-b", message: "anyone?" } }] };
      return { text: `tool said: ${textOf(req.messages.filter((m) => m.role === "tool").at(-1)?.content)}` };
    });
    await nats.kill();
    try {
      const r = await gwA.turn("agent:main:main:thread:down", "SCRIPT=down");
      expect(r.text).toMatch(/unreachable|not acknowledged|closed|disconnect/i);
      expect((await fetch(`http://127.0.0.1:${gwA.port}/readyz`)).ok).toBe(true);
    } finally {
      await nats.restart();
    }
  });
});
