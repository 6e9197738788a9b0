import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Mesh, parseSessionKey } from "../src/index.js";
import { startTestServer, type TestServer } from "./harness/server.js";
import { fastInbox, inspect, openMesh, uniquePrefix, removeTestStreams } from "./harness/mesh.js";
import { SessionProcess } from "./harness/child.js";

let server: TestServer;
const meshes: Mesh[] = [];
const children: SessionProcess[] = [];

beforeAll(async () => {
  server = await startTestServer();
});
afterAll(async () => {
  await Promise.all(children.map((c) => c.sigkill()));
  await Promise.all(meshes.map((m) => m.close().catch(() => undefined)));
  await removeTestStreams(server);
  await server.dispose();
});

async function mesh(prefix: string): Promise<Mesh> {
  const m = await openMesh(server, { prefix, instance: "gw1" });
  meshes.push(m);
  return m;
}

async function sessionProcess(prefix: string, sessionKey: string): Promise<SessionProcess> {
  const p = await SessionProcess.start({ url: server.url, prefix, instance: "gw1", sessionKey, inbox: { ...fastInbox } });
  children.push(p);
  return p;
}

describe("surfaced exactly once across crashes", () => {
  it("does not show again what a process confirmed before it was SIGKILLed ahead of its ack", async () => {
    const prefix = uniquePrefix();
    const m = await mesh(prefix);
    const key = "agent:b:main";
    const sent = [];
    for (let i = 0; i < 3; i++) sent.push((await m.send({ from: "agent:a:main", to: key, body: i })).id);

    const first = await sessionProcess(prefix, key);
    first.send({ op: "take" });
    expect((await first.expect("taken")).messages.map((x) => x.id)).toEqual(sent);
    first.send({ op: "confirm-then-hang" });
    expect((await first.expect("recorded")).ids).toEqual(sent);
    await first.sigkill();

    // The ack never reached the server: the messages are still unacknowledged there.
    const consumer = await (await inspect(server, prefix)).jsm.consumers.info((await inspect(server, prefix)).names.inboxStream("gw1"), (await inspect(server, prefix)).names.sessionConsumer(parseSessionKey(key, "gw1")));
    expect(consumer.ack_floor.stream_seq).toBe(0);

    const next = await sessionProcess(prefix, key);
    next.send({ op: "take" });
    expect((await next.expect("taken")).messages).toEqual([]);
    const fresh = await m.send({ from: "agent:a:main", to: key, body: "new" });
    next.send({ op: "take" });
    expect((await next.expect("taken")).messages.map((x) => x.id)).toEqual([fresh.id]);
    await next.close();
  });

  it("shows once, in the next process, what a process took but never confirmed before it was SIGKILLed", async () => {
    const prefix = uniquePrefix();
    const m = await mesh(prefix);
    const key = "agent:leasing-ops:cron:job1";
    const sent = (await m.send({ from: "agent:a:main", to: `${key}:run:r1`, body: "pingback" })).id;

    const first = await sessionProcess(prefix, `${key}:run:r1`);
    first.send({ op: "take" });
    expect((await first.expect("taken")).messages.map((x) => x.id)).toEqual([sent]);
    await first.sigkill();

    // The next run of the cron job (a different run id) is the same durable session.
    const next = await sessionProcess(prefix, `${key}:run:r2`);
    next.send({ op: "take" });
    expect((await next.expect("taken")).messages.map((x) => x.id)).toEqual([sent]);
    next.send({ op: "confirm" });
    await next.expect("confirmed");
    next.send({ op: "take" });
    expect((await next.expect("taken")).messages).toEqual([]);
    await next.close();
  });

  it("loses nothing when nats-server is SIGKILLed between publish and take and restarted on the same store", async () => {
    const prefix = uniquePrefix();
    const m = await mesh(prefix);
    const key = "agent:b:main";
    const sent: string[] = [];
    for (let i = 0; i < 50; i++) sent.push((await m.send({ from: "agent:a:main", to: key, body: i })).id);

    await server.kill();
    await server.restart();

    const reader = await sessionProcess(prefix, key);
    const got: string[] = [];
    for (let more = true; more; ) {
      reader.send({ op: "take", max: 20 });
      const taken = await reader.expect("taken");
      got.push(...taken.messages.map((x) => x.id));
      reader.send({ op: "confirm" });
      await reader.expect("confirmed");
      more = taken.more;
    }
    expect(got).toEqual(sent);
    await reader.close();
  });
});
