import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Mesh } from "../src/index.js";
import { MeshInspector, TestCluster } from "../src/testing/index.js";
import { until } from "./harness/wait.js";
import { uniquePrefix, smallRetention, fastInbox } from "./harness/mesh.js";
import { isBusUnreachable, isNoResponders } from "../src/transport/js-errors.js";

const inspectors: MeshInspector[] = [];

let cluster: TestCluster;
beforeAll(async () => {
  cluster = await TestCluster.start();
});
afterAll(async () => {
  for (const ins of inspectors) await ins.close();
  await cluster?.dispose();
});

async function clusterMesh(prefix: string): Promise<Mesh> {
  // JetStream needs its meta leader before the first stream can be created.
  let lastError: unknown;
  return until(
    async () =>
      Mesh.connect({
        servers: cluster.urls,
        instance: "gw1",
        prefix,
        retention: { ...smallRetention, replicas: 3 },
        // An election under load can take a while; sends keep retrying under their ids meanwhile.
        sendRetryMs: 90_000,
        inbox: fastInbox,
        connection: { maxReconnectAttempts: -1, reconnectTimeWait: 100 },
      }).catch((err: unknown) => {
        lastError = err;
        return undefined;
      }),
    () => `the cluster's JetStream to accept an R3 stream (last refusal: ${String(lastError)})`,
    60_000,
  );
}

describe("three-node cluster", () => {
  it("loses nothing and doubles nothing when the session stream's leader is SIGKILLed mid-traffic, and the node catches up on rejoining", async () => {
    const prefix = uniquePrefix();
    const mesh = await clusterMesh(prefix);
    const ins = await MeshInspector.connect(cluster.urls, prefix, { maxReconnectAttempts: -1, reconnectTimeWait: 100 });
    inspectors.push(ins);
    const stream = ins.names.inboxStream("gw1");
    const info = await ins.jsm.streams.info(stream);
    expect(info.config.num_replicas).toBe(3);
    const leader = info.cluster!.leader!;
    expect(cluster.names).toContain(leader);

    const acked: string[] = [];
    const failed: string[] = [];
    let sent = 0;
    const traffic = (async () => {
      await Promise.all(
        Array.from({ length: 4 }, async () => {
          while (sent < 400) {
            const id = `m${sent++}`;
            await mesh.send({ id, from: "agent:a:main", to: "agent:b:main", body: id }).then(
              () => acked.push(id),
              () => failed.push(id),
            );
          }
        }),
      );
    })();

    await until(async () => (acked.length >= 100 ? true : undefined), "100 acknowledged sends");
    await cluster.node(leader).kill();
    const newLeader = await until(async () => {
      const l = (await ins.jsm.streams.info(stream).catch(() => undefined))?.cluster?.leader;
      return l && l !== leader ? l : undefined;
    }, "a new stream leader", 60_000);
    expect(newLeader).not.toBe(leader);
    await traffic;
    expect(acked.length + failed.length).toBe(400);
    // Sends during the election are retried under their ids until a new leader takes them.
    expect(failed).toEqual([]);

    await cluster.node(leader).restart();
    await until(async () => {
      const c = (await ins.jsm.streams.info(stream).catch(() => undefined))?.cluster;
      const back = c?.replicas?.find((r) => r.name === leader);
      return back?.current ? true : undefined;
    }, "the old leader to rejoin and catch up", 60_000);

    // Read until every acknowledged send has been shown (a consumer whose leader is moving may
    // answer a pull with nothing, or a request time out, for a moment: a reader tries again, as
    // any client does when the bus is briefly unreachable), then once more to catch anything doubled.
    const retryable = <T>(err: unknown, fallback: T): T => {
      // "No responders" on a stream's API while its new leader is being elected counts too.
      if (isBusUnreachable(err) || isNoResponders(err)) return fallback;
      throw err;
    };
    const inbox = await until(() => mesh.sessions.openInbox("agent:b:main").catch((err: unknown) => retryable(err, undefined)), "the inbox to open", 60_000);
    const shown: string[] = [];
    const take = async () => {
      try {
        const batch = await inbox.take({ max: 500 });
        await batch.confirm();
        // Counted once recorded: a confirm that failed gives the batch back, to be shown again.
        shown.push(...batch.messages.map((m) => m.id));
        return batch.messages.length;
      } catch (err) {
        return retryable(err, 0);
      }
    };
    await until(async () => {
      await take();
      const seen = new Set(shown);
      return acked.every((id) => seen.has(id)) ? true : undefined;
    }, "every acknowledged send to be shown", 60_000);
    while ((await take()) > 0);
    await inbox.close();
    expect(new Set(shown).size).toBe(shown.length);
    const shownSet = new Set(shown);
    expect(acked.filter((id) => !shownSet.has(id))).toEqual([]);
    expect(shown.filter((id) => !acked.includes(id) && !failed.includes(id))).toEqual([]);
    await mesh.close();
  }, 180_000);
});
