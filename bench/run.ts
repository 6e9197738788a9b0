/**
 * npm run bench: the mesh against raw NATS JetStream, same server, same connection options
 * (noAsyncTraces), same payload and concurrency, alternating rounds. Prints a table of medians and
 * ratios and writes the full record as JSON under bench/results/.
 *
 * Env: BENCH_ROUNDS (5), BENCH_SEND_N (5000), BENCH_TAKE_N (100000), BENCH_CONCURRENCY (64),
 * BENCH_PINGBACKS (300), BENCH_SIBLING_MS (10000).
 */
import { randomBytes } from "node:crypto";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { AckPolicy, jetstream, jetstreamManager, type JetStreamClient } from "@nats-io/jetstream";
import { DeliverPolicy } from "@nats-io/jetstream";
import { createInbox } from "@nats-io/transport-node";
import { Mesh, type MeshSession } from "../src/index.js";
import { Kinds, TaskRequestBodySchema } from "../src/wire/index.js";
import { quantile, runMeasures, withServer, type Measure } from "./harness.js";

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const SEND_N = Number(process.env.BENCH_SEND_N ?? 5000);
const TAKE_N = Number(process.env.BENCH_TAKE_N ?? 100_000);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 64);
const PINGBACKS = Number(process.env.BENCH_PINGBACKS ?? 300);
const SIBLING_MS = Number(process.env.BENCH_SIBLING_MS ?? 10_000);
const PAYLOAD_BYTES = 256;
const connectionOptions = { noAsyncTraces: true } as const;

/** A JSON body that makes a ~256-byte payload for raw NATS and a 256-byte-body envelope for the mesh. */
const body = { text: "x".repeat(PAYLOAD_BYTES - 12) };
const rawPayload = new TextEncoder().encode(JSON.stringify(body));

async function inFlight(n: number, concurrency: number, op: (i: number) => Promise<unknown>): Promise<number> {
  let next = 0;
  const start = performance.now();
  await Promise.all(
    Array.from({ length: Math.min(concurrency, n) }, async () => {
      while (next < n) await op(next++);
    }),
  );
  return n / ((performance.now() - start) / 1000);
}

await withServer(async (server) => {
  const nc: NatsConnection = await connect({ servers: server.url, ...connectionOptions });
  const js: JetStreamClient = jetstream(nc);
  const jsm = await jetstreamManager(nc);
  const fresh = () => `b${randomBytes(4).toString("hex")}`;

  async function rawStream(): Promise<{ name: string; subject: string }> {
    await dropMade();
    const name = fresh();
    made.push(name);
    await jsm.streams.add({ name, subjects: [`${name}.>`], discard: "new" as never, duplicate_window: 120_000_000_000 });
    return { name, subject: `${name}.in.s1` };
  }

  // Every variant gets fresh streams; drop the previous ones (file streams reserve max_bytes).
  const made: string[] = [];
  async function dropMade(): Promise<void> {
    for (const name of made.splice(0)) await jsm.streams.delete(name).catch(() => undefined);
  }
  async function freshMesh(): Promise<Mesh> {
    await dropMade();
    const prefix = fresh();
    const mesh = await Mesh.attach(nc, { instance: "bench", prefix, retention: { maxBytes: 512 * 1024 * 1024, parkedMaxBytes: 16 * 1024 * 1024, seenMaxBytes: 16 * 1024 * 1024 } });
    for await (const name of jsm.streams.names()) if (name.startsWith(`${prefix}_`) || name.startsWith(`KV_${prefix}_`)) made.push(name);
    return mesh;
  }

  const measures: Measure[] = [
    {
      name: `send, ${CONCURRENCY} in flight`,
      unit: "msg/s",
      betterIs: "higher",
      target: ">= 1.0x js.publish",
      raw: async () => {
        const s = await rawStream();
        return { value: await inFlight(SEND_N, CONCURRENCY, (i) => js.publish(s.subject, rawPayload, { msgID: `m${i}` })) };
      },
      mesh: async () => {
        const mesh = await freshMesh();
        return { value: await inFlight(SEND_N, CONCURRENCY, () => mesh.send({ from: "agent:a:main", to: "agent:b:main", body })) };
      },
    },
    {
      name: "send, sequential",
      unit: "msg/s",
      betterIs: "higher",
      raw: async () => {
        const s = await rawStream();
        return { value: await inFlight(SEND_N / 5, 1, (i) => js.publish(s.subject, rawPayload, { msgID: `m${i}` })) };
      },
      mesh: async () => {
        const mesh = await freshMesh();
        return { value: await inFlight(SEND_N / 5, 1, () => mesh.send({ from: "agent:a:main", to: "agent:b:main", body })) };
      },
    },
    {
      name: `take + ack ${TAKE_N} pending`,
      unit: "msg/s",
      betterIs: "higher",
      target: ">= 0.6x raw durable consume",
      raw: async () => {
        const s = await rawStream();
        await inFlight(TAKE_N, 1024, (i) => js.publish(s.subject, rawPayload, { msgID: `m${i}` }));
        await jsm.consumers.add(s.name, { durable_name: "c", ack_policy: AckPolicy.Explicit, filter_subject: `${s.name}.in.s1` });
        const consumer = await js.consumers.get(s.name, "c");
        const start = performance.now();
        let got = 0;
        const messages = await consumer.consume({ max_messages: 1000 });
        for await (const m of messages) {
          m.ack();
          if (++got === TAKE_N) break;
        }
        const value = TAKE_N / ((performance.now() - start) / 1000);
        messages.stop();
        return { value };
      },
      mesh: async () => {
        const mesh = await freshMesh();
        await inFlight(TAKE_N, 1024, () => mesh.send({ from: "agent:a:main", to: "agent:b:main", body }));
        const start = performance.now();
        const inbox = await mesh.sessions.openInbox("agent:b:main");
        let got = 0;
        while (got < TAKE_N) {
          const batch = await inbox.take({ max: 1000 });
          got += batch.messages.length;
          await batch.confirm();
        }
        const value = TAKE_N / ((performance.now() - start) / 1000);
        await inbox.close();
        return { value };
      },
    },
    {
      name: "send vs raw ingest, 1024 in flight",
      unit: "msg/s",
      betterIs: "higher",
      raw: async () => {
        // Core publish with a reply subject; the stream's acks are counted on one inbox subscription.
        const s = await rawStream();
        const inbox = createInbox();
        let acked = 0;
        let done: () => void = () => {};
        const finished = new Promise<void>((r) => (done = r));
        const sub = nc.subscribe(`${inbox}.*`, { callback: () => {
          if (++acked === SEND_N * 4) done();
        },
      });
        const start = performance.now();
        let sent = 0;
        const pump = () => {
          while (sent < SEND_N * 4 && sent - acked < 1024) nc.publish(s.subject, rawPayload, { reply: `${inbox}.${sent++}` });
          if (sent < SEND_N * 4) setImmediate(pump);
        };
        pump();
        await finished;
        sub.unsubscribe();
        return { value: (SEND_N * 4) / ((performance.now() - start) / 1000) };
      },
      mesh: async () => {
        const mesh = await freshMesh();
        return { value: await inFlight(SEND_N * 4, 1024, () => mesh.send({ from: "agent:a:main", to: "agent:b:main", body })) };
      },
    },
    {
      name: "pingback latency p50 (complete -> awaiting caller)",
      unit: "ms",
      betterIs: "lower",
      target: "p50 <= 1.5x, p99 <= 2x raw",
      extras: ["p99"],
      raw: async () => {
        // Raw: the completer publishes to the caller's stream; the caller's consumer receives it.
        const s = await rawStream();
        const reader = await js.consumers.get(s.name, { filter_subjects: s.subject, deliver_policy: DeliverPolicy.New });
        const messages = await reader.consume();
        const iter = messages[Symbol.asyncIterator]();
        const lat: number[] = [];
        for (let i = 0; i < PINGBACKS; i++) {
          const t0 = performance.now();
          await js.publish(s.subject, rawPayload);
          await iter.next();
          lat.push(performance.now() - t0);
        }
        messages.stop();
        return { value: quantile(lat, 0.5), extra: { p99: quantile(lat, 0.99) } };
      },
      mesh: async () => {
        const mesh = await freshMesh();
        const caller = await mesh.sessions.open("agent:caller:main");
        const worker = await mesh.sessions.open("agent:worker:main");
        const lat: number[] = [];
        for (let i = 0; i < PINGBACKS; i++) {
          const t = await caller.delegate({ to: worker.address, message: "x" });
          let t1 = 0;
          const awaiting = caller.await([{ taskId: t.taskId }], { timeoutMs: 10_000 }).then((r) => {
            t1 = performance.now();
            return r;
          });
          // Let the await attach and read the registry before the clock starts.
          await new Promise((r) => setTimeout(r, 2));
          const t0 = performance.now();
          await worker.complete({ taskId: t.taskId, state: "completed", result: body });
          const r = await awaiting;
          lat.push(t1 - t0);
          if (r.done.length !== 1) throw new Error("pingback not returned");
        }
        await Promise.all([caller.close(), worker.close()]);
        return { value: quantile(lat, 0.5), extra: { p99: quantile(lat, 0.99) } };
      },
    },
    {
      name: `fast reply p50 while a sibling takes ${SIBLING_MS / 1000} s`,
      unit: "ms",
      betterIs: "lower",
      target: "unaffected by the sibling",
      extras: ["p99", "firstFastMs", "noSiblingP50"],
      raw: async () => {
        // Raw: core request/reply to a fast responder while a slow request is outstanding.
        const fastSub = nc.subscribe("bench.fast", { callback: (_e, m) => {
            m.respond(rawPayload);
          },
        });
        const slowSub = nc.subscribe("bench.slow", { callback: (_e, m) => void setTimeout(() => m.respond(rawPayload), SIBLING_MS) });
        const alone: number[] = [];
        for (let i = 0; i < 200; i++) {
          const t0 = performance.now();
          await nc.request("bench.fast", rawPayload, { timeout: 5000 });
          alone.push(performance.now() - t0);
        }
        const slow = nc.request("bench.slow", rawPayload, { timeout: SIBLING_MS * 2 });
        const lat: number[] = [];
        const start = performance.now();
        let first = Number.NaN;
        while (performance.now() - start < SIBLING_MS - 50) {
          const t0 = performance.now();
          await nc.request("bench.fast", rawPayload, { timeout: 5000 });
          lat.push(performance.now() - t0);
          if (Number.isNaN(first)) first = performance.now() - start;
        }
        await slow;
        fastSub.unsubscribe();
        slowSub.unsubscribe();
        return { value: quantile(lat, 0.5), extra: { p99: quantile(lat, 0.99), firstFastMs: first, noSiblingP50: quantile(alone, 0.5) } };
      },
      mesh: async () => {
        const mesh = await freshMesh();
        const caller = await mesh.sessions.open("agent:caller:main");
        const fast = await respondingAgent(mesh, "agent:fast:main", 0);
        const slow = await respondingAgent(mesh, "agent:slow:main", SIBLING_MS);
        const alone: number[] = [];
        for (let i = 0; i < 200; i++) {
          const t0 = performance.now();
          const r = await caller.delegate({ to: fast.session.address, message: "fast", waitMs: 5000 });
          if (!r.finished) throw new Error("fast reply did not arrive inline");
          alone.push(performance.now() - t0);
        }
        const sibling = caller.delegate({ to: slow.session.address, message: "slow", waitMs: SIBLING_MS * 2 });
        const lat: number[] = [];
        const start = performance.now();
        let first = Number.NaN;
        while (performance.now() - start < SIBLING_MS - 50) {
          const t0 = performance.now();
          const r = await caller.delegate({ to: fast.session.address, message: "fast", waitMs: 5000 });
          if (!r.finished) throw new Error("fast reply did not arrive inline");
          lat.push(performance.now() - t0);
          if (Number.isNaN(first)) first = performance.now() - start;
        }
        if (!(await sibling).finished) throw new Error("slow sibling did not finish");
        await Promise.all([fast.stop(), slow.stop()]);
        await caller.close();
        return { value: quantile(lat, 0.5), extra: { p99: quantile(lat, 0.99), firstFastMs: first, noSiblingP50: quantile(alone, 0.5) } };
      },
    },
  ];

  /** A scripted agent that completes each task after `delayMs` (a simulated slow model). */
  async function respondingAgent(mesh: Mesh, key: string, delayMs: number): Promise<{ session: MeshSession; stop: () => Promise<void> }> {
    const session = await mesh.sessions.open(key);
    const stop = new AbortController();
    const loop = (async () => {
      while (!stop.signal.aborted) {
        const arrival = session.nextArrival(stop.signal);
        const batch = await session.take({ max: 1000 });
        if (batch.messages.length === 0) {
          await arrival;
          continue;
        }
        await batch.confirm();
        for (const m of batch.messages) {
          if (m.kind !== Kinds.taskRequest) continue;
          const req = TaskRequestBodySchema.parse(m.body);
          const finish = () => session.complete({ taskId: req.taskId, state: "completed", result: "ok" });
          if (delayMs > 0) setTimeout(() => void finish(), delayMs);
          else await finish();
        }
      }
    })();
    return {
      session,
      stop: async () => {
        stop.abort();
        await loop.catch(() => undefined);
        await session.close();
      },
    };
  }

  await runMeasures(measures, ROUNDS, { payloadBytes: PAYLOAD_BYTES, concurrency: CONCURRENCY, sendN: SEND_N, takeN: TAKE_N, connection: connectionOptions, storage: "file" }, server.version);
  await nc.close();
});
