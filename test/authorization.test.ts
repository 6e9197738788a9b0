import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, AckPolicy } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { Mesh, parseSessionKey } from "../src/index.js";
import { LocalNatsServer } from "../src/server/local-server.js";
import { Names, generateAuthorization, inboxPrefixFor } from "../src/topology/index.js";

const PREFIX = "mesh";
const spec = { prefix: PREFIX, instances: { "gw-a": { password: "secret-a-123" }, "gw-b": { password: "secret-b-123" } } };
let dir: string;
let server: LocalNatsServer;
let a: Mesh;
let b: Mesh;

function meshAs(instance: "gw-a" | "gw-b"): Promise<Mesh> {
  return Mesh.connect({
    servers: server.url,
    instance,
    prefix: PREFIX,
    connection: { user: instance, pass: spec.instances[instance].password, inboxPrefix: inboxPrefixFor(instance) },
    inbox: { fetchExpiresMs: 1000 },
  });
}

/** A raw connection of instance gw-a, for attempts the mesh client would never make. */
function rawAsA(): Promise<NatsConnection> {
  return connect({ servers: server.url, user: "gw-a", pass: spec.instances["gw-a"].password, inboxPrefix: inboxPrefixFor("gw-a"), timeout: 2000 });
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "clawmesh-auth-"));
  writeFileSync(join(dir, "auth.conf"), generateAuthorization(spec));
  server = await LocalNatsServer.start({ storeDir: join(dir, "store"), configFile: join(dir, "auth.conf") });
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
