/**
 * The surfaced-id log: compacted by snapshots, so a long history never replays and opening reads a
 * bounded number of records; a refused seen write is a typed error and never parks a good message.
 */
import { describe, expect, it } from "vitest";
import { SeenLogRefusedError, parseSessionKey } from "../src/index.js";
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

  it("puts the newest ids in a snapshot's first part (the one written with the rollup, kept if a writer dies between parts)", () => {
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
});
