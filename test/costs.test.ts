/**
 * Per-operation costs on the server: nothing the mesh does per message or per operation may leave
 * (or even create) a server consumer. Sessions hold their own (a durable inbox consumer and a live
 * watcher while a run is open), and so does a process that awaits (one feed of its instance's
 * requested tasks); delegations, completions, watches and lookups hold none.
 */
import { connect } from "@nats-io/transport-node";
import { describe, expect, it } from "vitest";
import { Mesh } from "../src/index.js";
import { inspect, takeAll, uniquePrefix } from "./harness/mesh.js";
import { useServer } from "./harness/suite.js";
import { scriptedAgent } from "./harness/agents.js";
import { until } from "./harness/wait.js";

const suite = useServer();

describe("per-operation server cost", () => {
  it("creates no server consumer across 1,000 delegations, completions, watches and sends, task lookups, registry listings and janitor sweeps", async () => {
    const prefix = uniquePrefix();
    const m = await suite.mesh(prefix);
    await m.admin.sweep(); // a janitor's first sweep reads every record; later ones its lease view
    const boss = await m.sessions.open("agent:boss:main");
    const worker = await scriptedAgent(m, "agent:worker:main", async (req) => ({ state: "completed", result: `done ${req.taskId}` }));
    suite.cleanup(() => worker.stop());
    // Per process, not per operation: the feed of its instance's requested tasks, started by its first await.
    await boss.await([], { timeoutMs: 0 });
    expect(await boss.services.tasks.feedReady()).toBe(true);
    const ins = await inspect(suite.server, prefix);
    // Count with every session's own consumers in place; the server deletes an ordered consumer
    // when its client goes, so anything created per operation and dropped would not show: count
    // creations too, by the consumer-created advisory.
    let created = 0;
    const advisories = ins.nc.subscribe("$JS.EVENT.ADVISORY.CONSUMER.CREATED.>", { callback: () => void created++ });
    await ins.nc.flush();
    const before = await ins.consumerCount();

    const taskIds: string[] = [];
    for (let i = 0; i < 1000; i++) {
      const t = await boss.delegate({ to: m.address("agent:worker:main"), message: `job ${i}` });
      await boss.services.watches.add(boss.address, { taskId: t.taskId }, ["completed"]);
      await m.send({ from: "agent:boss:main", to: "agent:idle:main", body: { i } });
      taskIds.push(t.taskId);
      if (i % 10 === 0) {
        expect((await m.sessions.list()).length).toBeGreaterThanOrEqual(2);
        expect(await m.admin.sweep()).toEqual([]);
      }
    }
    const r = await boss.await(taskIds.map((taskId) => ({ taskId })), { mode: "all", timeoutMs: 60_000 });
    expect(r.done).toHaveLength(1000);
    for (const id of taskIds.slice(0, 100)) expect(await m.tasks.get(id)).toMatchObject({ state: "completed" });
    await takeAll(boss);

    await ins.nc.flush();
    expect(await ins.consumerCount()).toBe(before);
    expect(created).toBe(0);
    // The count does see consumers: opening one more session's run creates its own.
    const probe = await m.sessions.open("agent:probe:main");
    await until(async () => (created > 0 ? true : undefined), "the consumer-created advisory of a new session's run");
    expect(await ins.consumerCount()).toBeGreaterThan(before);
    await probe.close();
    advisories.unsubscribe();
    await boss.close();
  }, 120_000);

  it("takes a message its session's watcher saw land without first asking the server what is pending", async () => {
    const prefix = uniquePrefix();
    const m = await suite.mesh(prefix);
    const worker = await m.sessions.open("agent:worker:main");
    const ins = await inspect(suite.server, prefix);
    let infos = 0;
    const counting = ins.nc.subscribe(`$JS.API.CONSUMER.INFO.${ins.names.inboxStream("gw1")}.>`, { callback: () => void infos++ });
    await ins.nc.flush();
    // The first take asks (and finds nothing): from then on the reader knows what it has handled.
    expect((await worker.take()).messages).toEqual([]);
    for (let i = 0; i < 20; i++) {
      const arrived = worker.nextArrival();
      await m.send({ from: "agent:boss:main", to: "agent:worker:main", body: { i } });
      await arrived;
      const batch = await worker.take();
      expect(batch.messages.map((x) => x.body)).toEqual([{ i }]);
      await batch.confirm();
    }
    await ins.nc.flush();
    counting.unsubscribe();
    expect(infos).toBe(1);
    await worker.close();
  });

  it("leaves no status reader on a connection its caller keeps, once an attached mesh is closed", async () => {
    const nc = await connect({ servers: suite.server.url });
    suite.cleanup(() => nc.close());
    // White-box: the client's list of status readers (one per nc.status() still iterated).
    const readers = () => (nc as unknown as { protocol: { listeners: unknown[] } }).protocol.listeners.length;
    const before = readers();
    for (let i = 0; i < 3; i++) {
      const m = await Mesh.attach(nc, { instance: "gw1", prefix: uniquePrefix() });
      expect(readers()).toBeGreaterThan(before);
      await m.close();
    }
    await until(async () => (readers() === before ? true : undefined), "the attached meshes' status readers to be gone");
  });
});
