import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Mesh, MeshError, parseSessionKey } from "../src/index.js";
import { startTestServer, type TestServer } from "./harness/server.js";
import { inspect, openMesh, uniquePrefix, removeTestStreams } from "./harness/mesh.js";
import { SessionProcess } from "./harness/child.js";

let server: TestServer;
const meshes: Mesh[] = [];

beforeAll(async () => {
  server = await startTestServer();
});
afterAll(async () => {
  await Promise.all(meshes.map((m) => m.close().catch(() => undefined)));
  await removeTestStreams(server);
  await server.dispose();
});

async function mesh(prefix: string, extra: Partial<Parameters<typeof openMesh>[1]> = {}): Promise<Mesh> {
  const m = await openMesh(server, { prefix, instance: "gw1", ...extra });
  meshes.push(m);
  return m;
}

function envelope(from: string, toKey: string, extra: Record<string, unknown> = {}) {
  const to = parseSessionKey(toKey, "gw1");
  return {
    v: 1,
    id: `e${Math.random().toString(36).slice(2)}`,
    kind: "msg",
    from: { ...parseSessionKey("agent:a:main", from) },
    to,
    body: "hi",
    sentAt: new Date().toISOString(),
    ...extra,
  };
}

describe("parking malformed and failing messages", () => {
  it("parks raw garbage on a session subject, still serves the next good message, and lists the garbage from another process after restarts", async () => {
    const prefix = uniquePrefix();
    const m = await mesh(prefix);
    const key = "agent:b:telegram:direct:42";
    const to = parseSessionKey(key, "gw1");
    const subject = (await inspect(server, prefix)).names.inboxSubject(to, "gw1", "msg");
    const garbage: [Uint8Array | string, string][] = [
      ["not json at all", "invalid_json"],
      [new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]), "invalid_utf8"],
      [JSON.stringify({ hello: "world" }), "invalid_envelope"],
      [JSON.stringify(envelope("gw1", key, { v: 2 })), "unsupported_version"],
      // Claims to come from gw9 on a subject that says gw1.
      [JSON.stringify(envelope("gw9", key)), "sender_mismatch"],
      [JSON.stringify(envelope("gw1", "agent:someone-else:main")), "recipient_mismatch"],
    ];
    for (const [data] of garbage) await (await inspect(server, prefix)).js.publish(subject, data);
    const good = await m.send({ from: "agent:a:main", to: key, body: "good" });

    const inbox = await m.sessions.openInbox(key);
    const batch = await inbox.take();
    expect(batch.messages.map((x) => x.id)).toEqual([good.id]);
    await batch.confirm();
    await inbox.close();

    const parked = await m.parked.list(key);
    expect(parked.map((p) => p.reason)).toEqual(garbage.map(([, reason]) => reason));
    expect(parked.every((p) => p.subject === subject && p.sessionKey === key)).toBe(true);

    // Consumer gone and server restarted: a fresh process still sees every parked message.
    await (await inspect(server, prefix)).jsm.consumers.delete((await inspect(server, prefix)).names.inboxStream("gw1"), (await inspect(server, prefix)).names.sessionConsumer(to));
    await server.kill();
    await server.restart();
    const operator = await SessionProcess.start({ url: server.url, prefix, instance: "gw1" });
    operator.send({ op: "list-parked" });
    const listed = await operator.expect("parked");
    expect(listed.list.map((p) => p.reason)).toEqual(garbage.map(([, reason]) => reason));
    await operator.close();
  });

  it("parks a message its readers keep giving back, and shows it once when redriven", async () => {
    const prefix = uniquePrefix();
    const m = await mesh(prefix, { inbox: { maxDeliveries: 2 } });
    const key = "agent:b:main";
    const sent = await m.send({ from: "agent:a:main", to: key, body: "fragile" });
    const inbox = await m.sessions.openInbox(key);
    for (let attempt = 1; attempt <= 2; attempt++) {
      const batch = await inbox.take();
      expect(batch.messages.map((x) => x.id)).toEqual([sent.id]);
      await batch.release();
    }
    expect((await inbox.take()).messages).toEqual([]);
    const parked = await m.parked.list(key);
    expect(parked).toHaveLength(1);
    expect(parked[0]!.reason).toBe("max_deliveries");

    await m.parked.redrive(parked[0]!.parkedSeq);
    expect(await m.parked.list(key)).toEqual([]);
    const batch = await inbox.take();
    expect(batch.messages.map((x) => x.id)).toEqual([sent.id]);
    await batch.confirm();
    expect((await inbox.take()).messages).toEqual([]);
    await inbox.close();
  });

  it("refuses a body over the mesh limit before publishing, naming the limit", async () => {
    const prefix = uniquePrefix();
    const m = await mesh(prefix, { maxMessageBytes: 2048 });
    await expect(m.send({ from: "agent:a:main", to: "agent:b:main", body: "x".repeat(5000) })).rejects.toThrow(/mesh limit is 2048 bytes/);
    const info = await (await inspect(server, prefix)).jsm.streams.info((await inspect(server, prefix)).names.inboxStream("gw1"));
    expect(info.state.messages).toBe(0);
  });
});

describe("a take that fails after its fetch", () => {
  async function failedTake(take: Promise<unknown>): Promise<MeshError> {
    const err = await take.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(MeshError);
    return err as MeshError;
  }

  it("gives every fetched message back when parking fails: a later take shows the good message behind the bad one exactly once, and nothing was acknowledged meanwhile", async () => {
    const prefix = uniquePrefix();
    // Ack wait far beyond the test: a message the failed take kept would not come back by itself.
    const m = await mesh(prefix, { inbox: { ackWaitMs: 120_000 } });
    const ins = await inspect(server, prefix);
    const key = "agent:b:main";
    const to = parseSessionKey(key, "gw1");
    await ins.js.publish(ins.names.inboxSubject(to, "gw1", "msg"), "not json at all");
    const good = await m.send({ from: "agent:a:main", to: key, body: "good" });
    const inbox = await m.sessions.openInbox(key);

    // The parked stream is gone: parking the bad message is refused.
    await ins.jsm.streams.delete(ins.names.parkedStream("gw1"));
    const err = await failedTake(inbox.take());
    expect(err.code).toBe("take_failed");
    expect(err.message).toMatch(/nothing was acknowledged/);
    expect((await ins.sessionConsumer(to))?.ack_floor.stream_seq).toBe(0);

    // More arrives meanwhile; then the fault is removed.
    const later = await m.send({ from: "agent:a:main", to: key, body: "later" });
    expect((await ins.sessionConsumer(to))?.ack_floor.stream_seq).toBe(0);
    await m.admin.provision();
    const batch = await inbox.take();
    expect(batch.messages.map((x) => x.id)).toEqual([good.id, later.id]);
    await batch.confirm();
    expect((await inbox.take()).messages).toEqual([]);
    expect((await m.parked.list(key)).map((p) => p.reason)).toEqual(["invalid_json"]);
    await inbox.close();
  });

  it("gives a parked batch back when the surfaced-id log refuses its record, and shows what follows exactly once after", async () => {
    const prefix = uniquePrefix();
    const m = await mesh(prefix, { inbox: { ackWaitMs: 120_000 } });
    const ins = await inspect(server, prefix);
    const key = "agent:b:main";
    const to = parseSessionKey(key, "gw1");
    await ins.js.publish(ins.names.inboxSubject(to, "gw1", "msg"), "not json at all");
    const good = await m.send({ from: "agent:a:main", to: key, body: "good" });
    const inbox = await m.sessions.openInbox(key);

    // The seen log is gone: recording the parked message as handled is refused.
    await ins.jsm.streams.delete(ins.names.seenStream("gw1"));
    expect((await failedTake(inbox.take({ max: 1 }))).code).toBe("take_failed");
    expect((await ins.sessionConsumer(to))?.ack_floor.stream_seq).toBe(0);

    // A reader whose seen log vanished under it is fenced out (its next record cannot follow
    // what it knew): reopen after the log is back.
    await m.admin.provision();
    await inbox.close();
    const again = await m.sessions.openInbox(key);
    const batch = await again.take();
    expect(batch.messages.map((x) => x.id)).toEqual([good.id]);
    await batch.confirm();
    expect((await again.take()).messages).toEqual([]);
    expect((await m.parked.list(key)).map((p) => p.reason)).toEqual(["invalid_json"]);
    await again.close();
  });
});
