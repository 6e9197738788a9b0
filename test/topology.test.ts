import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { Mesh, TopologyConflictError, UnknownInstanceError } from "../src/index.js";
import { ServerFeatures } from "../src/topology/index.js";
import { startTestServer, type TestServer } from "./harness/server.js";
import { inspect, openMesh, uniquePrefix, removeTestStreams } from "./harness/mesh.js";

let server: TestServer;
let nc: NatsConnection;
beforeAll(async () => {
  server = await startTestServer();
  nc = await connect({ servers: server.url });
});
afterAll(async () => {
  await nc.close();
  await removeTestStreams(server);
  await server.dispose();
});

const SEC = 1_000_000_000;

describe("topology", () => {
  it("provisions an instance's inbox stream with explicit retention: max_age, discard new, duplicate window, size cap", async () => {
    const prefix = uniquePrefix();
    const mesh = await Mesh.connect({ servers: server.url, prefix, instance: "gw1" });
    const info = await (await inspect(server, prefix)).jsm.streams.info(`${prefix}_in_gw1`);
    expect(info.config.subjects).toEqual([`${prefix}.in.gw1.>`]);
    expect(info.config.max_age).toBe(7 * 24 * 3600 * SEC);
    expect(info.config.discard).toBe("new");
    expect(info.config.duplicate_window).toBe(120 * SEC);
    // Byte caps only where the server refuses at them exactly (2.10.6+); a count cap everywhere.
    expect(info.config.max_bytes).toBe(server.version.startsWith("2.9.") ? -1 : 256 * 1024 * 1024);
    expect(info.config.max_msgs).toBe(100_000);
    expect(info.config.storage).toBe("file");
    for (const name of [`${prefix}_parked_gw1`, `${prefix}_seen_gw1`, `KV_${prefix}_leases_gw1`]) {
      expect((await (await inspect(server, prefix)).jsm.streams.info(name)).config.discard).toBe("new");
    }
    await mesh.close();
  });

  it("is idempotent: provisioning twice, from two clients, changes nothing", async () => {
    const prefix = uniquePrefix();
    const [a, b] = await Promise.all([openMesh(server, { prefix, instance: "gw1" }), openMesh(server, { prefix, instance: "gw1" })]);
    const before = await (await inspect(server, prefix)).jsm.streams.info(`${prefix}_in_gw1`);
    await a.admin.provision();
    const after = await (await inspect(server, prefix)).jsm.streams.info(`${prefix}_in_gw1`);
    expect(after.config).toEqual(before.config);
    await Promise.all([a.close(), b.close()]);
  });

  it("provisions the shared buckets once when six instances connect at the same moment", async () => {
    for (let round = 0; round < 3; round++) {
      const prefix = uniquePrefix();
      const meshes = await Promise.all(["gw-a", "gw-b", "gw-c", "gw-d", "gw-e", "gw-f"].map((instance) => openMesh(server, { prefix, instance })));
      expect(meshes.map((m) => m.instance)).toEqual(["gw-a", "gw-b", "gw-c", "gw-d", "gw-e", "gw-f"]);
      await Promise.all(meshes.map((m) => m.close()));
    }
  });

  it("names the conflicting field when an existing stream disagrees with the configuration", async () => {
    const prefix = uniquePrefix();
    const mesh = await openMesh(server, { prefix, instance: "gw1" });
    await mesh.close();
    const err = await openMesh(server, { prefix, instance: "gw1", retention: { maxAgeMs: 3_600_000 } }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TopologyConflictError);
    expect((err as TopologyConflictError).field).toBe("max_age");
    expect((err as Error).message).toContain(`stream ${prefix}_in_gw1 exists with max_age=`);
  });

  it("derives every name from the prefix, so two prefixes share nothing", async () => {
    const p1 = uniquePrefix();
    const p2 = uniquePrefix();
    const m1 = await openMesh(server, { prefix: p1, instance: "gw1" });
    const m2 = await openMesh(server, { prefix: p2, instance: "gw1" });
    await m1.send({ from: "agent:a:main", to: "agent:b:main", body: 1 });
    const inbox = await m2.sessions.openInbox("agent:b:main");
    expect((await inbox.take()).messages).toEqual([]);
    await inbox.close();
    await Promise.all([m1.close(), m2.close()]);
  });

  it("tells a sender when the recipient instance was never provisioned", async () => {
    const prefix = uniquePrefix();
    const mesh = await openMesh(server, { prefix, instance: "gw1" });
    const err = await mesh.send({ from: "agent:a:main", to: { sessionKey: "agent:b:main", instance: "nowhere" }, body: 1 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UnknownInstanceError);
    expect((err as Error).message).toContain("clawmesh provision nowhere");
    await mesh.close();
  });

  it("detects server features from the version it connected to", async () => {
    const version = nc.info!.version;
    const f = new ServerFeatures(version);
    const is29 = version.startsWith("2.9.");
    expect(f.supports("multiFilter")).toBe(!is29);
    expect(f.supports("termReason")).toBe(!is29);
    expect(f.supports("messageTtl")).toBe(false);
  });

  it("uses one filter subject per session consumer (2.9 allows only one)", async () => {
    const prefix = uniquePrefix();
    const mesh = await openMesh(server, { prefix, instance: "gw1" });
    const inbox = await mesh.sessions.openInbox("agent:re-portal:telegram:direct:8035547811");
    const info = await (await inspect(server, prefix)).jsm.consumers.info(`${prefix}_in_gw1`, (await inspect(server, prefix)).names.sessionConsumer(inbox.session));
    expect(info.config.filter_subject).toBe(`${prefix}.in.gw1.*.re-portal.telegram.direct=3A8035547811.>`);
    expect(info.config.filter_subjects ?? []).toEqual([]);
    expect(info.config.ack_policy).toBe("all");
    expect(info.config.inactive_threshold).toBe(300 * SEC);
    await inbox.close();
    await mesh.close();
  });
});

describe("mesh client edge validation", () => {
  it("rejects a send with a typed error naming the bad field", async () => {
    const prefix = uniquePrefix();
    const mesh: Mesh = await openMesh(server, { prefix, instance: "gw1" });
    await expect(mesh.send({ from: "agent:a:main", to: "agent:b:main", body: 1, id: "has space" })).rejects.toThrow(/invalid send: id:/);
    // A body JSON would silently change (NaN, undefined, a Date) is refused, not sent altered.
    for (const body of [Number.NaN, { at: new Date(0) }, [undefined]]) await expect(mesh.send({ from: "agent:a:main", to: "agent:b:main", body: body as never })).rejects.toThrow(/invalid send: body/);
    await expect(mesh.send({ from: "agent:a:main", to: "nonsense", body: 1 })).rejects.toThrow(/starts with 'agent:/);
    await expect(mesh.send({ from: { sessionKey: "agent:a:main", instance: "gw2" }, to: "agent:b:main", body: 1 })).rejects.toThrow(/cannot send as instance 'gw2'/);
    await mesh.close();
  });
});
