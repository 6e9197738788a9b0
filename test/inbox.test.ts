import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { randomUUID } from "node:crypto";
import { Mesh, parseSessionKey, type InboxMessage } from "../src/index.js";
import { startTestServer, type TestServer } from "./harness/server.js";
import { closeInternalContexts, inspect, internalContext, openMesh, removeTestStreams, takeAll, uniquePrefix } from "./harness/mesh.js";
import { SessionProcess } from "./harness/child.js";
import { consumerDeleted, until } from "./harness/wait.js";
import { SessionLease } from "../src/inbox/index.js";

let server: TestServer;
const open: Mesh[] = [];

beforeAll(async () => {
  server = await startTestServer();
});
afterAll(async () => {
  await Promise.all(open.map((m) => m.close().catch(() => undefined)));
  await closeInternalContexts();
  await removeTestStreams(server);
  await server.dispose();
});

async function mesh(prefix: string, instance = "gw1", extra: Parameters<typeof openMesh>[1] extends infer O ? Partial<O> : never = {}): Promise<Mesh> {
  const m = await openMesh(server, { prefix, instance, ...extra });
  open.push(m);
  return m;
}

const ids = (ms: readonly InboxMessage[]) => ms.map((m) => m.id);

describe("session inbox", () => {
  it("shows a message sent while the recipient had no process when its first process starts", async () => {
    const prefix = uniquePrefix();
    const sender = await mesh(prefix);
    const to = "agent:re-portal:telegram:direct:8035547811";
    const sent = await sender.send({ from: "agent:leasing-ops:cron:8babbec2:run:e08e19ff", to, body: { text: "occupancy for April?" } });

    const recipient = await SessionProcess.start({ url: server.url, prefix, instance: "gw1", sessionKey: to });
    recipient.send({ op: "take" });
    const taken = await recipient.expect("taken");
    expect(taken.messages.map((m) => m.id)).toEqual([sent.id]);
    expect(taken.messages[0]!.body).toEqual({ text: "occupancy for April?" });
    recipient.send({ op: "confirm" });
    await recipient.expect("confirmed");
    recipient.send({ op: "take" });
    expect((await recipient.expect("taken")).messages).toEqual([]);
    await recipient.close();
  });

  it("delivers a session's messages in the order they were sent", async () => {
    const prefix = uniquePrefix();
    const m = await mesh(prefix);
    const sent = [];
    for (let i = 0; i < 25; i++) sent.push((await m.send({ from: "agent:a:main", to: "agent:b:main", body: i })).id);
    const inbox = await m.sessions.openInbox("agent:b:main");
    const got = await takeAll(inbox, 7);
    expect(got).toEqual(sent);
    await inbox.close();
  });

  it("shows one envelope published twice once, inside the server's duplicate window and after it", async () => {
    const prefix = uniquePrefix();
    const m = await mesh(prefix, "gw1", { retention: { duplicateWindowMs: 1000 } });
    const envId = randomUUID();
    const first = await m.send({ id: envId, from: "agent:a:main", to: "agent:b:main", body: "once" });
    const again = await m.send({ id: envId, from: "agent:a:main", to: "agent:b:main", body: "once" });
    expect(again.duplicate).toBe(true);
    expect(again.seq).toBe(first.seq);

    // Both copies stored (the second after the window), neither shown yet: one batch shows it once.
    const late = await until(async () => {
      const r = await m.send({ id: envId, from: "agent:a:main", to: "agent:b:main", body: "once" });
      return r.duplicate ? undefined : r;
    }, "the duplicate window to pass");
    expect(late.seq).not.toBe(first.seq);
    const inbox = await m.sessions.openInbox("agent:b:main");
    const batch = await inbox.take();
    expect(ids(batch.messages)).toEqual([envId]);
    await batch.confirm();

    // A copy arriving after it was shown and confirmed is not shown again.
    const later = await until(async () => {
      const r = await m.send({ id: envId, from: "agent:a:main", to: "agent:b:main", body: "once" });
      return r.duplicate ? undefined : r;
    }, "the duplicate window to pass again");
    expect(later.seq).toBeGreaterThan(late.seq);
    expect((await inbox.take()).messages).toEqual([]);
    await inbox.close();
  });

  it("reaches one inbox from a run-scoped key and from its parent key", async () => {
    const prefix = uniquePrefix();
    const m = await mesh(prefix);
    const a = await m.send({ from: "agent:x:main", to: "agent:leasing-ops:cron:job1:run:r1", body: "to the run" });
    const b = await m.send({ from: "agent:x:main", to: "agent:leasing-ops:cron:job1", body: "to the job" });
    const inbox = await m.sessions.openInbox("agent:leasing-ops:cron:job1:run:r2");
    const batch = await inbox.take();
    expect(ids(batch.messages)).toEqual([a.id, b.id]);
    expect(batch.messages[0]!.to.run).toBe("r1");
    await batch.confirm();
    await inbox.close();
  });

  it("never shares an inbox between two sessions of one agent, or one key on two instances", async () => {
    const prefix = uniquePrefix();
    const gw1 = await mesh(prefix, "gw1");
    const gw2 = await mesh(prefix, "gw2");
    const toA = await gw1.send({ from: "agent:x:main", to: "agent:main:telegram:direct:1", body: "A" });
    const toB = await gw1.send({ from: "agent:x:main", to: "agent:main:telegram:direct:2", body: "B" });
    const toGw2 = await gw1.send({ from: "agent:x:main", to: { sessionKey: "agent:main:telegram:direct:1", instance: "gw2" }, body: "gw2" });

    for (const [m, key, want] of [
      [gw1, "agent:main:telegram:direct:1", [toA.id]],
      [gw1, "agent:main:telegram:direct:2", [toB.id]],
      [gw2, "agent:main:telegram:direct:1", [toGw2.id]],
    ] as const) {
      const inbox = await m.sessions.openInbox(key);
      const batch = await inbox.take();
      expect(ids(batch.messages)).toEqual(want);
      await batch.confirm();
      await inbox.close();
    }
  });

  it("lets one reader at a time hold a session: a second reader waits, then gets the rest, nothing split or doubled", async () => {
    const prefix = uniquePrefix();
    const m1 = await mesh(prefix);
    const m2 = await mesh(prefix);
    const sent: string[] = [];
    for (let i = 0; i < 10; i++) sent.push((await m1.send({ from: "agent:a:main", to: "agent:b:main", body: i })).id);

    const first = await m1.sessions.openInbox("agent:b:main");
    let secondOpened = false;
    const secondPromise = m2.sessions.openInbox("agent:b:main", { waitMs: 30_000 }).then((i) => {
      secondOpened = true;
      return i;
    });
    const batch1 = await first.take({ max: 4 });
    expect(batch1.messages).toHaveLength(4);
    await batch1.confirm();
    expect(secondOpened).toBe(false);
    await first.close();

    const second = await secondPromise;
    const batch2 = await second.take();
    await batch2.confirm();
    expect([...ids(batch1.messages), ...ids(batch2.messages)]).toEqual(sent);
    await second.close();
  });

  it("keeps its lease when renewals overlap (a timer renewal racing a take)", async () => {
    const prefix = uniquePrefix();
    await mesh(prefix); // provisions the instance's lease bucket
    const lease = await SessionLease.acquire(await internalContext(server, prefix, "gw1"), parseSessionKey("agent:b:main", "gw1"));
    await Promise.all([lease.renew(), lease.renew(), lease.renew(), lease.ensureHeld()]);
    expect(lease.held).toBe(true);
    await lease.renew();
    await lease.release();
  });

  it("gives a reaped session consumer exactly its unacknowledged messages, once each", async () => {
    const prefix = uniquePrefix();
    const m = await mesh(prefix, "gw1", { inbox: { inactiveThresholdMs: 1000 } });
    const key = "agent:b:main";
    const sent: string[] = [];
    for (let i = 0; i < 5; i++) sent.push((await m.send({ from: "agent:a:main", to: key, body: i })).id);

    const inbox = await m.sessions.openInbox(key);
    const shown = await inbox.take({ max: 3 });
    await shown.confirm();
    const unshown = await inbox.take({ max: 2 });
    expect(ids(unshown.messages)).toEqual(sent.slice(3));
    const address = parseSessionKey(key, "gw1");
    const reaped = consumerDeleted((await inspect(server, prefix)).nc, (await inspect(server, prefix)).names.inboxStream("gw1"), (await inspect(server, prefix)).names.sessionConsumer(address));
    await unshown.release();
    await inbox.close();
    await reaped;

    sent.push((await m.send({ from: "agent:a:main", to: key, body: 5 })).id);
    const again = await m.sessions.openInbox(key);
    const batch = await again.take();
    expect(ids(batch.messages)).toEqual(sent.slice(3));
    await batch.confirm();
    expect((await again.take()).messages).toEqual([]);
    await again.close();
  });

  it("does not redeliver a batch held through a turn longer than the ack deadline", async () => {
    const prefix = uniquePrefix();
    const m = await mesh(prefix, "gw1", { inbox: { ackWaitMs: 1000 } });
    await m.send({ from: "agent:a:main", to: "agent:b:main", body: "long turn" });
    const inbox = await m.sessions.openInbox("agent:b:main");
    const batch = await inbox.take();
    expect(batch.messages).toHaveLength(1);
    // A simulated slow model turn: three ack deadlines long.
    await new Promise((r) => setTimeout(r, 3200));
    const info = await (await inspect(server, prefix)).jsm.consumers.info((await inspect(server, prefix)).names.inboxStream("gw1"), (await inspect(server, prefix)).names.sessionConsumer(inbox.session));
    expect(info.num_redelivered).toBe(0);
    expect(info.num_ack_pending).toBe(1);
    await batch.confirm();
    expect((await inbox.take()).messages).toEqual([]);
    await inbox.close();
  });
});
