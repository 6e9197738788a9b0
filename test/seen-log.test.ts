/**
 * The surfaced-id log: compacted by snapshots, so a long history never replays and opening reads a
 * bounded number of records; a refused seen write is a typed error and never parks a good message.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { Mesh, SeenLogRefusedError, parseSessionKey } from "../src/index.js";
import { LocalNatsServer, MeshInspector } from "../src/testing/index.js";
import { MAX_DELTAS, snapshotParts } from "../src/inbox/seen-log.js";
import { inspect, uniquePrefix } from "./harness/mesh.js";
import { useServer } from "./harness/suite.js";
import { consumerDeleted } from "./harness/wait.js";

const suite = useServer();

async function recordCount(prefix: string, sessionKey: string): Promise<number> {
  const ins = await inspect(suite.server, prefix);
  const subject = ins.names.seenSubject(parseSessionKey(sessionKey, "gw1"));
  const info = await ins.jsm.streams.info(ins.names.seenStream("gw1"), { subjects_filter: subject });
  return info.state.subjects?.[subject] ?? 0;
}

describe("surfaced-id log", () => {
  it("compacts a long history and replays nothing after the session's consumer was reaped", async () => {
    const prefix = uniquePrefix();
    const m = await suite.mesh(prefix, "gw1", { inbox: { inactiveThresholdMs: 1000 } });
    const key = "agent:b:main";
    const inbox = await m.sessions.openInbox(key);
    const batches = MAX_DELTAS * 2 + 10;
    for (let i = 0; i < batches; i++) {
      await m.send({ from: "agent:a:main", to: key, body: i });
      const b = await inbox.take();
      expect(b.messages).toHaveLength(1);
      await b.confirm();
    }
    // Snapshots rolled the older records up: far fewer records than confirmations.
    expect(await recordCount(prefix, key)).toBeLessThanOrEqual(MAX_DELTAS + 2);

    const ins = await inspect(suite.server, prefix);
    const reaped = consumerDeleted(ins.nc, ins.names.inboxStream("gw1"), ins.names.sessionConsumer(parseSessionKey(key, "gw1")));
    await inbox.close();
    await reaped;

    const late = (await m.send({ from: "agent:a:main", to: key, body: "after" })).id;
    const again = await m.sessions.openInbox(key);
    const batch = await again.take({ max: 1000 });
    expect(batch.messages.map((x) => x.id)).toEqual([late]);
    await batch.confirm();
    await again.close();
  });

  it("reports a full seen log with a typed error, gives the batch back, and never parks the good messages it could not record", async () => {
    const prefix = uniquePrefix();
    // Room for three records: two other sessions' fences and this session's own.
    const m = await suite.mesh(prefix, "gw1", { retention: { seenMaxMessages: 3 }, inbox: { maxDeliveries: 2 } });
    const key = "agent:b:main";
    // Fill the seen stream from other sessions first.
    for (const other of ["agent:x:main", "agent:y:main"]) {
      const i = await m.sessions.openInbox(other);
      await i.close();
    }
    const sent = (await m.send({ from: "agent:a:main", to: key, body: "precious" })).id;
    const inbox = await m.sessions.openInbox(key);
    for (let attempt = 0; attempt < 4; attempt++) {
      const b = await inbox.take();
      expect(b.messages.map((x) => x.id)).toEqual([sent]);
      await expect(b.confirm()).rejects.toBeInstanceOf(SeenLogRefusedError);
    }
    expect(await m.parked.list()).toEqual([]);
    await inbox.close();
  });

  it("a snapshot the seen stream refuses records nothing: the batch comes back and is shown again", async () => {
    const prefix = uniquePrefix();
    // Room for this session's fence and MAX_DELTAS - 1 deltas: the next write, a snapshot, is refused.
    const m = await suite.mesh(prefix, "gw1", { retention: { seenMaxMessages: MAX_DELTAS } });
    const key = "agent:b:main";
    const inbox = await m.sessions.openInbox(key);
    for (let i = 1; i < MAX_DELTAS; i++) {
      await m.send({ from: "agent:a:main", to: key, body: i });
      const b = await inbox.take();
      expect(b.messages).toHaveLength(1);
      await b.confirm();
    }
    const last = (await m.send({ from: "agent:a:main", to: key, body: "at the snapshot" })).id;
    const b = await inbox.take();
    expect(b.messages.map((x) => x.id)).toEqual([last]);
    await expect(b.confirm()).rejects.toBeInstanceOf(SeenLogRefusedError);
    expect(inbox.surfaced("gw1", last)).toBe(false);
    const again = await inbox.take();
    expect(again.messages.map((x) => x.id)).toEqual([last]);
    await again.release();
    await inbox.close();
  });

  it("splits a snapshot into parts under the budget, newest ids first, losing and doubling none", () => {
    const ids = new Map<string, number>();
    const minute = 60_000;
    for (let i = 0; i < 3000; i++) ids.set(`gw1/id-${String(i).padStart(5, "0")}`, 1_700_000_000_000 + (i % 50) * minute);
    const parts = snapshotParts(ids, 4096);
    expect(parts.length).toBeGreaterThan(2);
    const minuteOf = (g: { at: number }) => g.at;
    const first = parts[0]!.map(minuteOf);
    const rest = parts.slice(1).flatMap((p) => p.map(minuteOf));
    expect(Math.min(...first)).toBeGreaterThanOrEqual(Math.max(...rest));
    // Nothing lost or doubled by the split.
    expect(parts.flatMap((p) => p.flatMap((g) => g.ids)).sort()).toEqual([...ids.keys()].sort());
  });

  it("loses no id when a snapshot of several parts stops after its first part, and drops the older records once one completes", async () => {
    // A small max_payload makes a few hundred ids a snapshot of several parts.
    const dir = mkdtempSync(join(tmpdir(), "clawmesh-seen-"));
    writeFileSync(join(dir, "small.conf"), "max_payload: 16384\n");
    const server = await LocalNatsServer.start({ storeDir: join(dir, "store"), configFile: join(dir, "small.conf") });
    const prefix = uniquePrefix();
    // Room for this session's fence and MAX_DELTAS - 1 deltas, plus one record: the snapshot that
    // the MAX_DELTAS-th confirm writes stores its first part, and the seen stream refuses the second.
    const m = await Mesh.connect({ servers: server.url, instance: "gw1", prefix, retention: { seenMaxMessages: MAX_DELTAS + 1 }, inbox: { fetchExpiresMs: 1000 } });
    const ins = await MeshInspector.connect(server.url, prefix);
    try {
      const key = "agent:b:main";
      const session = parseSessionKey(key, "gw1");
      const send = async (n: number) => Promise.all(Array.from({ length: n }, (_, i) => m.send({ from: "agent:a:main", to: key, body: i }).then((d) => d.id)));
      const confirmed: string[] = [];
      let inbox = await m.sessions.openInbox(key);
      for (let i = 1; i < MAX_DELTAS; i++) {
        const ids = await send(3);
        const b = await inbox.take({ max: 10 });
        expect(b.messages.map((x) => x.id).sort()).toEqual(ids.sort());
        await b.confirm();
        confirmed.push(...ids);
      }
      const atSnapshot = await send(3);
      const b = await inbox.take({ max: 10 });
      await expect(b.confirm()).rejects.toBeInstanceOf(SeenLogRefusedError);
      await inbox.close();

      // The operator makes room; the next reader loads the log as the failed snapshot left it.
      await ins.jsm.streams.update(ins.names.seenStream("gw1"), { max_msgs: -1 });
      inbox = await m.sessions.openInbox(key);
      expect(confirmed.filter((id) => !inbox.surfaced("gw1", id))).toEqual([]);
      // The batch the snapshot could not record is shown again, and recorded now (a snapshot that completes).
      const again = await inbox.take({ max: 10 });
      expect(again.messages.map((x) => x.id).sort()).toEqual([...atSnapshot].sort());
      await again.confirm();
      await inbox.close();

      const subject = ins.names.seenSubject(session);
      const records = (await ins.jsm.streams.info(ins.names.seenStream("gw1"), { subjects_filter: subject })).state.subjects?.[subject] ?? 0;
      // The complete snapshot's parts, the batch's delta and the last reader's fence: the older records are gone.
      expect(records).toBeGreaterThan(2);
      expect(records).toBeLessThan(10);
      const last = await m.sessions.openInbox(key);
      expect([...confirmed, ...atSnapshot].filter((id) => !last.surfaced("gw1", id))).toEqual([]);
      expect((await last.take()).messages).toEqual([]);
      await last.close();
    } finally {
      await m.close();
      await ins.close();
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
