import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { inspect, openMesh, removeTestStreams, takeAll, uniquePrefix } from "./harness/mesh.js";
import { startTestServer, type TestServer } from "./harness/server.js";
import { SessionProcess } from "./harness/child.js";
import { until } from "./harness/wait.js";

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(async () => {
  await removeTestStreams(server);
  await server.dispose();
});

describe("single-server faults", () => {
  it("surfaces every acknowledged send exactly once when nats-server is SIGKILLed during 1,000 sends from three processes", async () => {
    const prefix = uniquePrefix();
    const observer = await openMesh(server, { prefix, instance: "gw1" });
    const senders = await Promise.all([0, 1, 2].map(() => SessionProcess.start({ url: server.url, prefix, instance: "gw1" })));
    const counts = [334, 333, 333];
    senders.forEach((p, i) => p.send({ op: "send-many", to: "agent:b:main", count: counts[i]!, concurrency: 8, idPrefix: `p${i}` }));

    // Kill the server once a good part of the traffic is in, while the rest is in flight.
    const stream = (await inspect(server, prefix)).names.inboxStream("gw1");
    await until(async () => ((await (await inspect(server, prefix)).jsm.streams.info(stream)).state.messages >= 250 ? true : undefined), "250 stored sends");
    await server.kill();
    await server.restart();

    const reports = await Promise.all(senders.map((p) => p.expect("sent-many")));
    await Promise.all(senders.map((p) => p.close()));
    const acked = reports.flatMap((r) => r.acked);
    const failed = reports.flatMap((r) => r.failed);
    expect(acked.length + failed.length).toBe(1000);

    const inbox = await observer.sessions.openInbox("agent:b:main");
    const shown = await takeAll(inbox, 500);
    await inbox.close();
    await observer.close();

    // Every acknowledged send surfaced, none twice; anything else surfaced was a send reported failed.
    expect(new Set(shown).size).toBe(shown.length);
    const shownSet = new Set(shown);
    expect(acked.filter((id) => !shownSet.has(id))).toEqual([]);
    const failedSet = new Set(failed);
    expect(shown.filter((id) => !acked.includes(id) && !failedSet.has(id))).toEqual([]);
  });
});
