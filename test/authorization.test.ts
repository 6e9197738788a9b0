import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, headers, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, AckPolicy } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { Mesh, parseSessionKey } from "../src/index.js";
import { LocalNatsServer } from "../src/server/local-server.js";
import { Names, generateAuthorization, inboxPrefixFor } from "../src/topology/index.js";

const PREFIX = "mesh";
const spec = {
  prefix: PREFIX,
  instances: { "gw-a": { password: "secret-a-123" }, "gw-b": { password: "secret-b-123" }, "gw-c": { password: "secret-c-123" } },
  operator: { user: "ops", password: "secret-ops-123" },
};
let dir: string;
let server: LocalNatsServer;
let a: Mesh;
let b: Mesh;

function meshAs(instance: "gw-a" | "gw-b" | "gw-c"): Promise<Mesh> {
  return Mesh.connect({
    servers: server.url,
    instance,
    prefix: PREFIX,
    // The one auth story: the inbox prefix follows from the instance.
    auth: { user: instance, password: spec.instances[instance].password },
    inbox: { fetchExpiresMs: 1000 },
  });
}

/** A raw connection of an instance, for attempts the mesh client would never make. */
function rawAs(instance: "gw-a" | "gw-b" = "gw-a"): Promise<NatsConnection> {
  return connect({ servers: server.url, user: instance, pass: spec.instances[instance].password, inboxPrefix: inboxPrefixFor(instance), timeout: 2000 });
}
const rawAsA = () => rawAs("gw-a");

/** Runs `attempt` on a fresh raw connection of `instance`; what the server and client said. */
async function attemptAs(instance: "gw-a" | "gw-b", attempt: (nc: NatsConnection) => Promise<unknown>): Promise<string> {
  const nc = await rawAs(instance);
  const violations: string[] = [];
  void (async () => {
    for await (const st of nc.status()) if (st.type === "error") violations.push(String((st as { error?: unknown }).error));
  })();
  const outcome = await Promise.race([attempt(nc).then(() => "succeeded", (e: unknown) => String(e)), new Promise<string>((r) => setTimeout(() => r("no answer"), 3000))]);
  await nc.flush().catch(() => undefined);
  await nc.close().catch(() => undefined);
  return [outcome, ...violations].join(" | ");
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "clawmesh-auth-"));
  writeFileSync(join(dir, "auth.conf"), generateAuthorization(spec));
  server = await LocalNatsServer.start({ storeDir: join(dir, "store"), configFile: join(dir, "auth.conf") });
  // Provisioning is the operator's: instances can create nothing.
  const ops = await Mesh.connect({ servers: server.url, instance: "ops", prefix: PREFIX, provision: false, auth: { user: "ops", password: "secret-ops-123" } });
  await ops.admin.provision("gw-a");
  await ops.admin.provision("gw-b");
  await ops.close();
  a = await meshAs("gw-a");
  b = await meshAs("gw-b");
});
afterAll(async () => {
  await a?.close();
  await b?.close();
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
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
    const ops = await connect({ servers: server.url, user: "ops", pass: "secret-ops-123" });
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
      { instance: "gw-b", servers: server.url, prefix: PREFIX, auth: { user: "gw-b", password: spec.instances["gw-b"].password } },
      { info: (m: string) => logs.push(m), warn: (m: string) => logs.push(m), error: (m: string) => logs.push(m) },
    );
    await runtime.start();
    const run = await runtime.runFor("agent:plugin:main");
    const sent = await run.send({ to: a.address({ sessionKey: "agent:main:main", instance: "gw-a" }), body: "from the plugin" });
    expect(sent.status).toBe("sent");
    await runtime.stop();
    expect(logs.join("\n")).not.toContain(spec.instances["gw-b"].password);
    const inbox = await a.sessions.openInbox("agent:main:main");
    const batch = await inbox.take();
    expect(batch.messages.map((m) => m.body)).toContain("from the plugin");
    await batch.confirm();
    await inbox.close();
  });
});
