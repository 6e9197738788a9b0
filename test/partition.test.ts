/**
 * A TCP-level partition, not a process kill: reader A's connection freezes while it confirms, B
 * takes the session over once A's lease expires, and then the partition heals. The seen log's
 * fencing refuses whatever A still tries to record, so every message is recorded once.
 */
import { describe, expect, it } from "vitest";
import { LeaseLostError, MeshError, Mesh } from "../src/index.js";
import { TcpProxy } from "../src/testing/index.js";
import { fastInbox, inspect, smallRetention, uniquePrefix } from "./harness/mesh.js";
import { useServer } from "./harness/suite.js";
import { until } from "./harness/wait.js";

const suite = useServer();

/** Every envelope id recorded on a session's seen subject, one entry per record it appears in. */
async function recordedIds(prefix: string, instance: string, sessionKey: string): Promise<string[]> {
  const ins = await inspect(suite.server, prefix);
  const stream = ins.names.seenStream(instance);
  const subject = ins.names.seenSubject(ins.address(sessionKey, instance));
  const out: string[] = [];
  for (let seq = 1; ; ) {
    const m = await ins.jsm.direct.getMessage(stream, { seq, next_by_subj: subject });
    if (m === null) break;
    const r = m.json<{ groups?: { ids: string[] }[] }>();
    // Each recorded key is `<sending instance>/<envelope id>`.
    for (const g of r.groups ?? []) out.push(...g.ids.map((k) => k.slice(k.indexOf("/") + 1)));
    seq = m.seq + 1;
  }
  return out;
}

describe("partition", () => {
  it("records each message once when a reader's connection freezes mid-confirm, another takes over, and the partition heals", async () => {
    const prefix = uniquePrefix();
    const inbox = { ...fastInbox, leaseTtlMs: 1000 };
    const sender = await suite.mesh(prefix, "gw1", { inbox });
    const sent: string[] = [];
    for (let i = 0; i < 5; i++) sent.push((await sender.send({ from: "agent:a:main", to: "agent:b:main", body: `m${i}` })).id);

    const proxy = await TcpProxy.start({ target: { host: "127.0.0.1", port: Number(new URL(suite.server.url).port) } });
    suite.cleanup(() => proxy.stop());
    const a = await Mesh.connect({ servers: proxy.url, prefix, instance: "gw1", retention: smallRetention, inbox, connection: { maxReconnectAttempts: -1, reconnectTimeWait: 100 } });
    suite.cleanup(() => a.close());
    const readerA = await a.sessions.openInbox("agent:b:main");
    const batchA = await readerA.take();
    expect(batchA.messages.map((m) => m.id)).toEqual(sent);

    proxy.freeze();
    const confirmA = batchA.confirm().then(
      () => "confirmed",
      (err: unknown) => err,
    );

    // B waits out A's lease (A cannot renew through the frozen connection) and takes over.
    const readerB = await sender.sessions.openInbox("agent:b:main", { waitMs: 30_000 });
    const batchB = await readerB.take();
    expect(batchB.messages.map((m) => m.id)).toEqual(sent);
    await batchB.confirm();

    proxy.heal();
    const outcome = await confirmA;
    expect(outcome).toBeInstanceOf(MeshError);
    expect(outcome).toBeInstanceOf(LeaseLostError);

    const recorded = await recordedIds(prefix, "gw1", "agent:b:main");
    expect([...recorded].sort()).toEqual([...sent].sort());
    expect((await readerB.take()).messages).toEqual([]);
    await readerB.close();
    await readerA.close().catch(() => undefined);
  });

  it("confirms a batch whose seen record was stored though the connection reset before its acknowledgement came, and shows nothing twice", async () => {
    const prefix = uniquePrefix();
    const sender = await suite.mesh(prefix, "gw1");
    const sent: string[] = [];
    for (let i = 0; i < 3; i++) sent.push((await sender.send({ from: "agent:a:main", to: "agent:b:main", body: `m${i}` })).id);

    const proxy = await TcpProxy.start({ target: { host: "127.0.0.1", port: Number(new URL(suite.server.url).port) } });
    suite.cleanup(() => proxy.stop());
    const a = await Mesh.connect({ servers: proxy.url, prefix, instance: "gw1", retention: smallRetention, inbox: fastInbox, connection: { maxReconnectAttempts: -1, reconnectTimeWait: 100 } });
    suite.cleanup(() => a.close());
    const reader = await a.sessions.openInbox("agent:b:main");
    const batch = await reader.take();
    expect(batch.messages.map((m) => m.id)).toEqual(sent);

    // The record reaches the server; its acknowledgement is held, then lost with the connection.
    proxy.freeze("toClient");
    const confirming = batch.confirm().then(
      () => "confirmed",
      (err: unknown) => err,
    );
    await until(async () => ((await recordedIds(prefix, "gw1", "agent:b:main")).length === sent.length ? true : undefined), "the confirm's record to be stored");
    proxy.cutAll();
    proxy.heal();

    expect(await confirming).toBe("confirmed");
    expect((await reader.take()).messages).toEqual([]);
    await reader.close();
    expect([...(await recordedIds(prefix, "gw1", "agent:b:main"))].sort()).toEqual([...sent].sort());
    // The next reader shows nothing again either.
    const next = await sender.sessions.openInbox("agent:b:main");
    expect((await next.take()).messages).toEqual([]);
    await next.close();
  });
});
