/**
 * The janitor's cost follows the running sessions, not the registry: after its first pass (every
 * record of the instance), a pass reads what was written to the instance's lease bucket since the
 * last one, and the records of the sessions that hold a lease (or held one when their process died).
 */
import { describe, expect, it } from "vitest";
import { Kvm } from "@nats-io/kv";
import { parseSessionKey } from "../src/index.js";
import { SessionRecordSchema } from "../src/wire/index.js";
import { KvStore } from "../src/topology/index.js";
import { z } from "zod";
import { inspect, uniquePrefix } from "./harness/mesh.js";
import { useServer } from "./harness/suite.js";

const suite = useServer();
const IDLE = 200;

describe("the janitor", () => {
  it("after its first pass reads only the sessions with a lease, idles a dead run's record and removes its lease", async () => {
    const prefix = uniquePrefix();
    const m = await suite.mesh(prefix, "gw1");
    const ins = await inspect(suite.server, prefix);
    // Many registered sessions that no run holds.
    const kv = await new Kvm(ins.nc).open(ins.names.sessionBucket());
    const now = new Date().toISOString();
    for (let i = 0; i < IDLE; i++) {
      const address = parseSessionKey(`agent:idle:main:s${i}`, "gw1");
      const { run: _r, thread: _t, ...plain } = address;
      await kv.put(ins.names.sessionRecordKey(address), JSON.stringify(SessionRecordSchema.parse({ v: 1, address: plain, sessionKey: `agent:idle:main:s${i}`, lifecycle: "idle", resumable: true, owner: "gw1", createdAt: now, lastActivity: now })));
    }
    // A run closed cleanly: its lease is released (a delete marker in the lease bucket).
    const closed = await m.sessions.open("agent:closed:main");
    await closed.close();
    const leases = await KvStore.open(ins, ins.names.leaseBucket("gw1"), z.unknown());
    const leaseOf = (key: string) => leases.read(ins.names.leaseKey(parseSessionKey(key, "gw1")));

    // One live run, and one whose process dies holding its lease.
    const live = await m.sessions.open("agent:live:main");
    const doomed = await suite.mesh(prefix, "gw1");
    await doomed.sessions.open("agent:doomed:main");
    expect(await m.admin.sweep()).toEqual([]); // the first pass: every record, nothing dead yet
    await doomed.close(); // its connection goes: the run's liveness subscription with it

    // Keys read (a direct get names its key in its subject; a compare-and-set's re-read counts once).
    const keysRead = new Set<string>();
    const sessionGets = ins.nc.subscribe(`$JS.API.DIRECT.GET.KV_${ins.names.sessionBucket()}.>`, { callback: (_e, msg) => void keysRead.add(msg.subject) });
    await ins.nc.flush();
    expect(await m.admin.sweep()).toEqual(["agent:doomed:main"]);
    await ins.nc.flush();
    sessionGets.unsubscribe();
    // The records of the two sessions with a lease (live, doomed): not the hundreds registered, not the released one.
    expect(keysRead.size).toBe(2);
    expect(await m.sessions.get("agent:doomed:main")).toMatchObject({ lifecycle: "idle", resumable: true, lastTurn: { outcome: "interrupted" } });
    expect(await m.sessions.get("agent:live:main")).toMatchObject({ lifecycle: "active" });
    // The dead run's lease is deleted, so later passes skip it; the live run keeps its own.
    expect(await leaseOf("agent:doomed:main")).toMatchObject({ status: "absent" });
    expect(await leaseOf("agent:live:main")).toMatchObject({ status: "value" });
    expect(await m.admin.sweep()).toEqual([]);
    await live.close();
    expect((await m.sessions.list({ instance: "gw1" })).filter((r) => r.lifecycle === "active")).toEqual([]);
  });
});
