import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect, headers, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, AckPolicy } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { parseSessionKey, type Mesh } from "../src/index.js";
import { Names, inboxPrefixFor } from "../src/topology/index.js";
import { OPERATOR, passwordOf, startSecuredMesh, type SecuredMesh } from "./harness/secured.js";

const PREFIX = "mesh";
let secured: SecuredMesh;
let a: Mesh;
let b: Mesh;

const meshAs = (instance: string) => secured.meshAs(instance);
const rawAsA = () => secured.rawAs("gw-a");
const attemptAs = (instance: string, attempt: (nc: NatsConnection) => Promise<unknown>) => secured.attemptAs(instance, attempt);

beforeAll(async () => {
  secured = await startSecuredMesh(["gw-a", "gw-b", "gw-c"], PREFIX);
  await secured.provision("gw-a", "gw-b");
  a = await meshAs("gw-a");
  b = await meshAs("gw-b");
});
afterAll(async () => {
  await secured?.dispose();
});

describe("broker-enforced identity", () => {
  it("lets each instance send as itself and read its own inbox", async () => {
    const sent = await a.send({ from: "agent:main:main", to: { sessionKey: "agent:main:main", instance: "gw-b" }, body: "hi b" });
    const run = await b.sessions.open("agent:main:main");
    const batch = await run.take();
    expect(batch.messages.map((m) => m.id)).toEqual([sent.id]);
    await batch.confirm();
    await run.close();
  });

  it.each([
    ["read another instance's inbox through a consumer", async (nc: NatsConnection) => (await jetstreamManager(nc)).consumers.add(`${PREFIX}_in_gw-b`, { durable_name: "spy", ack_policy: AckPolicy.Explicit }), `$JS.API.CONSUMER.CREATE.${PREFIX}_in_gw-b.spy`],
    ["read another instance's inbox by direct get", async (nc: NatsConnection) => (await jetstreamManager(nc, { checkAPI: false })).direct.getMessage(`${PREFIX}_in_gw-b`, { seq: 1 }), `$JS.API.DIRECT.GET.${PREFIX}_in_gw-b`],
    ["read another instance's inbox by message get", async (nc: NatsConnection) => (await jetstreamManager(nc, { checkAPI: false })).streams.getMessage(`${PREFIX}_in_gw-b`, { seq: 1 }), `$JS.API.STREAM.MSG.GET.${PREFIX}_in_gw-b`],
    ["delete another instance's consumer", async (nc: NatsConnection) => (await jetstreamManager(nc, { checkAPI: false })).consumers.delete(`${PREFIX}_in_gw-b`, new Names(PREFIX).sessionConsumer(parseSessionKey("agent:main:main", "gw-b"))), `$JS.API.CONSUMER.DELETE.${PREFIX}_in_gw-b`],
    ["pull from another instance's consumer", async (nc: NatsConnection) => (await jetstream(nc).consumers.get(`${PREFIX}_in_gw-b`, new Names(PREFIX).sessionConsumer(parseSessionKey("agent:main:main", "gw-b")))).next({ expires: 1000 }), `$JS.API.CONSUMER.INFO.${PREFIX}_in_gw-b`],
    ["write another instance's session registry entry", async (nc: NatsConnection) => (await new Kvm(nc).open(`${PREFIX}_sessions`, { bindOnly: true })).put("gw-b.main.main.=", "{}"), `$KV.${PREFIX}_sessions.gw-b.main.main.=`],
    ["send with another instance's identity", async (nc: NatsConnection) => jetstream(nc).publish(`${PREFIX}.in.gw-a.gw-b.main.main.=.msg`, "forged", { timeout: 2000 }), `${PREFIX}.in.gw-a.gw-b.main.main.=.msg`],
    ["subscribe to another instance's replies", async (nc: NatsConnection) => {
      const sub = nc.subscribe(`${inboxPrefixFor("gw-b")}.>`);
      await nc.flush();
      return sub.closed;
    }, `${inboxPrefixFor("gw-b")}.>`],
  ] as const)("refuses an instance that tries to %s, naming what was refused", async (_what, attempt, subject) => {
    const nc = await rawAsA();
    const violations: string[] = [];
    void (async () => {
      for await (const s of nc.status()) if (s.type === "error") violations.push(String((s as { error?: unknown }).error));
    })();
    const outcome = await Promise.race([attempt(nc).then(() => "succeeded", (e: unknown) => String(e)), new Promise<string>((r) => setTimeout(() => r("no answer"), 3000))]);
    await nc.close().catch(() => undefined);
    const said = [outcome, ...violations].join(" | ");
    expect(said).toMatch(/permission/i);
    expect(said).toContain(subject);
  });
});

describe("a neighbour with valid credentials", () => {
  it("cannot make a victim's liveness responder answer to a JetStream API subject", async () => {
    const run = await a.sessions.open("agent:main:main");
    await a.send({ from: "agent:main:main", to: "agent:main:main", body: "keep me" });
    const holder = (await a.sessions.get("agent:main:main"))?.holder;
    expect(holder).toBeDefined();
    const probe = `${PREFIX}.alive.gw-a.${holder}`;
    // gw-b may not even publish there.
    const said = await attemptAs("gw-b", async (nc) => {
      nc.publish(probe, undefined, { reply: `$JS.API.STREAM.PURGE.${PREFIX}_in_gw-a` });
      await nc.flush();
    });
    expect(said).toMatch(/permission/i);
    expect(said).toContain(probe);
    // The operator can publish anywhere: even then the victim answers only its own inbox prefix,
    // so the request to purge is never made on its behalf.
    const ops = await connect({ servers: secured.server.url, user: OPERATOR.user, pass: OPERATOR.password });
    const purges: string[] = [];
    const watch = ops.subscribe(`$JS.API.STREAM.PURGE.>`, { callback: (_e, m) => void purges.push(m.subject) });
    ops.publish(probe, undefined, { reply: `$JS.API.STREAM.PURGE.${PREFIX}_in_gw-a` });
    const own = await ops.request(probe, undefined, { timeout: 2000 }).then(
      () => "answered",
      (e: unknown) => String(e),
    );
    await ops.flush();
    watch.unsubscribe();
    await ops.close();
    expect(own).not.toBe("answered"); // the operator's reply prefix is not gw-a's either
    expect(purges).toEqual([]);
    const batch = await run.take();
    expect(batch.messages.map((m) => m.body)).toEqual(["keep me"]);
    await batch.confirm();
    await run.close();
  });

  it("cannot roll up a shared bucket from a key it may write", async () => {
    const run = await a.sessions.open("agent:boss:main");
    const t = await run.delegate({ to: a.address({ sessionKey: "agent:main:main", instance: "gw-b" }), message: "x" });
    const said = await attemptAs("gw-b", async (nc) => {
      const h = headers();
      h.set("Nats-Rollup", "all");
      return jetstream(nc).publish(`$KV.${PREFIX}_tasks.gw-b.gw-b.wipe`, "{}", { headers: h, timeout: 2000 });
    });
    expect(said).toMatch(/rollup/i);
    expect(await a.tasks.get(t.taskId)).toMatchObject({ taskId: t.taskId, state: "submitted" });
    await run.close();
  });

  it.each([
    ["create a stream of its own name that captures another's replies", (nc: NatsConnection) => jetstreamManager(nc, { checkAPI: false }).then((j) => j.streams.add({ name: `${PREFIX}_x_gw-b`, subjects: [`${inboxPrefixFor("gw-a")}.>`] })), `$JS.API.STREAM.CREATE.${PREFIX}_x_gw-b`],
    ["reconfigure its own inbox stream", (nc: NatsConnection) => jetstreamManager(nc, { checkAPI: false }).then((j) => j.streams.update(`${PREFIX}_in_gw-b`, { max_age: 1 })), `$JS.API.STREAM.UPDATE.${PREFIX}_in_gw-b`],
    ["purge its own inbox stream", (nc: NatsConnection) => jetstreamManager(nc, { checkAPI: false }).then((j) => j.streams.purge(`${PREFIX}_in_gw-b`)), `$JS.API.STREAM.PURGE.${PREFIX}_in_gw-b`],
    ["delete a shared bucket", (nc: NatsConnection) => jetstreamManager(nc, { checkAPI: false }).then((j) => j.streams.delete(`KV_${PREFIX}_tasks`)), `$JS.API.STREAM.DELETE.KV_${PREFIX}_tasks`],
    ["read a shared bucket through a consumer", (nc: NatsConnection) => jetstreamManager(nc, { checkAPI: false }).then((j) => j.consumers.add(`KV_${PREFIX}_tasks`, { ack_policy: AckPolicy.None })), `$JS.API.CONSUMER.CREATE.KV_${PREFIX}_tasks`],
  ] as const)("is refused when it tries to %s", async (_what, attempt, subject) => {
    const said = await attemptAs("gw-b", attempt);
    expect(said).toMatch(/permission/i);
    expect(said).toContain(subject);
  });

  it("connects an instance nobody provisioned with an error naming the operator action", async () => {
    const err = await meshAs("gw-c").catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "not_provisioned" });
    expect(String(err)).toContain("clawmesh provision");
  });
});

describe("one auth story", () => {
  it("accepts what the generated configuration needs and refuses an ambiguous or unreadable credential without echoing secrets", async () => {
    const { connectionOptionsFor } = await import("../src/transport/credentials.js");
    expect(connectionOptionsFor({ user: "gw-a", password: "secret-a-123" }, "gw-a").inboxPrefix).toBe("_INBOX_gw-a");
    expect(connectionOptionsFor({ token: "t0ken-value" }, "gw-b").authenticator).toBeTypeOf("function");
    expect(connectionOptionsFor({ tls: { caFile: "/etc/ssl/ca.pem" }, inboxPrefix: "_INBOX_custom" }, "gw-b")).toMatchObject({ tls: { caFile: "/etc/ssl/ca.pem" }, inboxPrefix: "_INBOX_custom" });
    const both = (() => connectionOptionsFor({ user: "gw-a", password: "pw-secret-1", token: "tok-secret-2" }, "gw-a")).bind(null);
    expect(both).toThrow(/give one of user\/password, token, nkeySeedFile or credsFile/);
    expect(() => connectionOptionsFor({ user: "gw-a" }, "gw-a")).toThrow(/user and password go together/);
    const missing = (() => {
      try {
        connectionOptionsFor({ credsFile: "/nonexistent/gw-a.creds" }, "gw-a");
        return "no error";
      } catch (e) {
        return String(e);
      }
    })();
    expect(missing).toMatch(/cannot read \/nonexistent\/gw-a.creds: ENOENT/);
    try {
      connectionOptionsFor({ user: "gw-a", password: "pw-secret-1", token: "tok-secret-2" }, "gw-a");
    } catch (e) {
      expect(String(e)).not.toMatch(/pw-secret-1|tok-secret-2/);
    }
  });

  it("runs the OpenClaw plugin's connection on the generated credentials", async () => {
    const { MeshRuntime } = await import("../src/openclaw/runtime.js");
    const logs: string[] = [];
    const runtime = new MeshRuntime(
      { instance: "gw-b", servers: secured.server.url, prefix: PREFIX, auth: { user: "gw-b", password: passwordOf("gw-b") } },
      { info: (m: string) => logs.push(m), warn: (m: string) => logs.push(m), error: (m: string) => logs.push(m) },
    );
    await runtime.start();
    const run = await runtime.runFor("agent:plugin:main");
    const sent = await run.send({ to: a.address({ sessionKey: "agent:main:main", instance: "gw-a" }), body: "from the plugin" });
    expect(sent.status).toBe("sent");
    await runtime.stop();
    expect(logs.join("\n")).not.toContain(passwordOf("gw-b"));
    const inbox = await a.sessions.openInbox("agent:main:main");
    const batch = await inbox.take();
    expect(batch.messages.map((m) => m.body)).toContain("from the plugin");
    await batch.confirm();
    await inbox.close();
  });
});
