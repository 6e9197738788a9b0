/**
 * A bucket view kept in the process (`KvStore.view()`): after each refresh it holds exactly the
 * bucket's current readable values, whatever happened in between (puts, overwrites, deletes, a
 * purge that leaves no message), and it makes no server consumer.
 */
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { KvStore } from "../src/topology/index.js";
import { uniquePrefix } from "./harness/mesh.js";
import { useServer } from "./harness/suite.js";

const suite = useServer();
const Schema = z.object({ n: z.number() });

async function bucket(history = 1) {
  const nc = await connect({ servers: suite.server.url });
  suite.cleanup(() => nc.close());
  const jsm = await jetstreamManager(nc);
  const name = `${uniquePrefix()}_view`;
  const kv = await new Kvm(nc).create(name, { history });
  suite.cleanup(() => jsm.streams.delete(`KV_${name}`));
  const store = await KvStore.open({ nc, jsm }, name, Schema);
  return { kv, jsm, store, stream: `KV_${name}` };
}

/** What the bucket holds now, read key by key: the truth the view must match. */
async function truth(store: KvStore<typeof Schema>): Promise<Record<string, number>> {
  return Object.fromEntries((await store.values()).map((s) => [s.key, s.value.n]));
}
const held = (view: { values(): { key: string; value: { n: number } }[] }) => Object.fromEntries(view.values().map((s) => [s.key, s.value.n]));

describe("a bucket view kept in the process", () => {
  it("matches the bucket after every refresh through puts, overwrites, deletes, unreadable records and a purge that leaves no message", async () => {
    const { kv, jsm, store, stream } = await bucket();
    const view = store.view();
    await view.refresh();
    expect(held(view)).toEqual({});

    for (let i = 0; i < 300; i++) await kv.put(`a.k${i}`, JSON.stringify({ n: i }));
    await view.refresh();
    expect(held(view)).toEqual(await truth(store));
    expect(Object.keys(held(view))).toHaveLength(300);

    // Overwrites, deletes, a key created and deleted between two refreshes, a record the schema refuses.
    for (let i = 0; i < 100; i++) await kv.put(`a.k${i}`, JSON.stringify({ n: 1000 + i }));
    for (let i = 100; i < 150; i++) await kv.delete(`a.k${i}`);
    await kv.put("b.short-lived", JSON.stringify({ n: -1 }));
    await kv.delete("b.short-lived");
    await kv.put("b.later-schema", JSON.stringify({ n: "not a number" }));
    await view.refresh();
    expect(held(view)).toEqual(await truth(store));
    expect(held(view)["a.k0"]).toBe(1000);
    expect(held(view)["a.k120"]).toBeUndefined();
    expect(held(view)["b.later-schema"]).toBeUndefined();
    expect(view.values("b.")).toHaveLength(0);

    // An operator's purge of some keys removes their messages without a trace: the count says so.
    await jsm.streams.purge(stream, { filter: `$KV.${stream.slice(3)}.a.k250` });
    await view.refresh();
    expect(held(view)).toEqual(await truth(store));
    expect(held(view)["a.k250"]).toBeUndefined();
  });

  it("reloads by key when far more was written since the last refresh than the bucket holds", async () => {
    const { kv, store } = await bucket();
    for (let i = 0; i < 20; i++) await kv.put(`k${i}`, JSON.stringify({ n: i }));
    const view = store.view();
    await view.refresh();
    for (let round = 0; round < 30; round++) for (let i = 0; i < 20; i++) await kv.put(`k${i}`, JSON.stringify({ n: round * 100 + i }));
    await view.refresh();
    expect(held(view)).toEqual(await truth(store));
    expect(held(view).k7).toBe(2907);
  });

  it("sees a write acknowledged before the refresh, also when refreshes overlap", async () => {
    const { kv, store } = await bucket();
    const view = store.view();
    const refreshes: Promise<void>[] = [];
    for (let i = 0; i < 50; i++) {
      await kv.put(`k${i}`, JSON.stringify({ n: i }));
      refreshes.push(view.refresh());
    }
    await Promise.all(refreshes);
    await view.refresh();
    expect(Object.keys(held(view))).toHaveLength(50);
  });

  it("never drops keys that other writers keep rewriting while it loads or refreshes", async () => {
    const { kv, store } = await bucket();
    await kv.put("a", JSON.stringify({ n: 0 }));
    await kv.put("b", JSON.stringify({ n: 0 }));
    const view = store.view();
    await view.refresh();
    // Every key is rewritten without pause: the view's entries fall below the stream's first
    // sequence while the newest writes land after a refresh read the stream's state.
    let stop = false;
    const rewrite = async (key: string) => {
      for (let n = 1; !stop; n++) await kv.put(key, JSON.stringify({ n }));
    };
    const writers = Promise.all([rewrite("a"), rewrite("b")]);
    const missing: number[] = [];
    for (let i = 0; i < 300; i++) {
      // Every third refresh is a first load (a new view reads the whole stream by sequence).
      const v = i % 3 === 0 ? store.view() : view;
      await v.refresh();
      if (v.values().map((s) => s.key).sort().join() !== "a,b") missing.push(i);
    }
    stop = true;
    await writers;
    expect(missing).toEqual([]);
  });
});
