/**
 * npm run bench: the mesh against raw NATS JetStream, same server, same connection options
 * (noAsyncTraces), same payload and concurrency, alternating rounds. Prints a table of medians and
 * ratios and writes the full record as JSON under bench/results/.
 *
 * Env: BENCH_ROUNDS (5), BENCH_SEND_N (5000), BENCH_TAKE_N (100000), BENCH_CONCURRENCY (64).
 */
import { randomBytes } from "node:crypto";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { AckPolicy, jetstream, jetstreamManager, type JetStreamClient } from "@nats-io/jetstream";
import { Mesh } from "../src/index.js";
import { runMeasures, withServer, type Measure } from "./harness.js";

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const SEND_N = Number(process.env.BENCH_SEND_N ?? 5000);
const TAKE_N = Number(process.env.BENCH_TAKE_N ?? 100_000);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 64);
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
    const name = fresh();
    await jsm.streams.add({ name, subjects: [`${name}.>`], discard: "new" as never, duplicate_window: 120_000_000_000 });
    return { name, subject: `${name}.in.s1` };
  }

  async function freshMesh(): Promise<Mesh> {
    return Mesh.attach(nc, { instance: "bench", prefix: fresh() });
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
        const inbox = await mesh.openInbox("agent:b:main");
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
  ];

  await runMeasures(measures, ROUNDS, { payloadBytes: PAYLOAD_BYTES, concurrency: CONCURRENCY, sendN: SEND_N, takeN: TAKE_N, connection: connectionOptions, storage: "file" }, server.version);
  await nc.close();
});
