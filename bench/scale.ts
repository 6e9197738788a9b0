/**
 * npm run bench:scale: the mesh with many registered sessions. For each size (a fresh server and
 * a fresh prefix each) it measures:
 *
 * - registering N sessions: registry records written straight to the session bucket (key from
 *   `Names.sessionRecordKey`, value checked by `SessionRecordSchema`), 256 writes in flight; no
 *   public call registers a session without opening its run, which would be far too slow at 100k;
 * - opening a run (`mesh.sessions.open`) of 50 registered sessions never opened before, one at a
 *   time (p50 / p99, and the median of the first 10 against the last 10); the runs stay open, so
 *   the janitor has live runs to probe;
 * - `mesh.sessions.list()` over all of them, and one janitor pass (`mesh.admin.sweep()`), for up
 *   to BENCH_SCALE_ROUNDS rounds each (first and last round, and their drift: last / first);
 * - server RSS (VmRSS of the nats-server process) empty, after registering, at the end;
 * - server consumers on the inbox stream and on the session bucket's stream, before the opens
 *   and at the end (after the runs are closed);
 * - server memory per idle session: every session not opened above is given what an idle session
 *   holds besides its record, one inbox message and one seen record (a delta naming it), written
 *   straight to the streams (256 in flight); the opened runs' consumers are deleted (as the server
 *   reaps them when idle), the server is stopped and started again on its store, and (RSS after
 *   the restart - RSS of the fresh empty server) / N is the memory an idle session costs it. The
 *   RSS read right after writes holds the heap's garbage and block caches (it even shrank while
 *   the writes ran): a restart leaves only what the server keeps for the data;
 * - opening a run of a session with a history of N surfaced messages (N = the size; the 100k column
 *   is the "100k-record history"): N messages sent to it and taken and confirmed through the
 *   mesh (1000 a batch), then HISTORY_OPENS runs opened one at a time, each with a first take
 *   (nothing pending) and a close: open p50 / max, first take p50, and the seen-log records the
 *   open read.
 *
 * Bounded: each size has BENCH_SCALE_BUDGET_S seconds. A step still running at the deadline is
 * cut off (its connections are closed) and it and the later steps print "skipped (over N s)";
 * a further round starts only when the time left would hold it.
 *
 * Env: BENCH_SCALE_SIZES ("1000,10000,100000"; quick look: "200,1000"), BENCH_SCALE_BUDGET_S
 * (300), BENCH_SCALE_ROUNDS (3).
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { join } from "node:path";
import { Kvm } from "@nats-io/kv";
import type { Status } from "@nats-io/transport-node";
import { pino } from "pino";
import { Mesh, sessionKeyOf, type MeshSession, type SessionAddress } from "../src/index.js";
import { MeshInspector } from "../src/testing/index.js";
import { SeenRecordSchema, SessionRecordSchema } from "../src/wire/index.js";
import { DRIFT_LIMIT, installFailureGuards, median, printTable, quantile, rssMiB, settle, withServer } from "./harness.js";

installFailureGuards();

const SIZES = (process.env.BENCH_SCALE_SIZES ?? "1000,10000,100000").split(",").map((s) => Number(s.trim()));
const BUDGET_S = Number(process.env.BENCH_SCALE_BUDGET_S ?? 300);
const ROUNDS = Number(process.env.BENCH_SCALE_ROUNDS ?? 3);
const OPENS = 50;
/** Runs opened, one at a time, on the session with a long history. */
const HISTORY_OPENS = 10;
const WRITES_IN_FLIGHT = 256;
const INSTANCE = "scale";
const for_ = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
const ms = (x: number) => (x >= 100 ? x.toFixed(0) : x.toFixed(2));

let version = "";
if (SIZES.some((n) => !Number.isInteger(n) || n < OPENS)) throw new Error(`BENCH_SCALE_SIZES: whole numbers of at least ${OPENS}`);

class OverBudget extends Error {
  constructor() {
    super(`over ${BUDGET_S} s`);
  }
}

interface Consumers {
  readonly durable: number;
  readonly ephemeral: number;
}

interface SizeResult {
  size: number;
  registerMs?: number;
  openMs?: number[];
  listMs: number[];
  sweepMs: number[];
  listed?: number;
  rssMiB: { empty?: number; registered?: number; end?: number; idleRestarted?: number };
  /** Sessions given an idle session's message and seen record. */
  idleSessions?: number;
  history?: { messages: number; fillMs: number; openMs: number[]; firstTakeMs: number[]; seenRecords: number };
  consumers: { inboxBefore?: Consumers; inboxAfter?: Consumers; bucketBefore?: Consumers; bucketAfter?: Consumers };
  skippedFrom?: string;
  totalMs: number;
}

/** A session key per index: 50 agents, one channel, one session each. */
const keyOf = (i: number) => `agent:w${i % 50}:scale:s${i}`;
/** The session the idle sessions' and the history session's messages come from. */
const SENDER = "agent:sender:scale:x";

/** Resolves at the connection's next reconnect (the status iterator is stopped then). */
async function reconnected(status: AsyncIterable<Status>): Promise<void> {
  for await (const s of status) if (s.type === "reconnect") return;
}

async function runSize(size: number): Promise<SizeResult> {
  const started = performance.now();
  const deadline = started + BUDGET_S * 1000;
  const result: SizeResult = { size, listMs: [], sweepMs: [], rssMiB: {}, consumers: {}, totalMs: 0 };
  const log = (s: string) => process.stderr.write(`  [${size}] ${s}\n`);

  await withServer(async (server) => {
    version = server.version;
    result.rssMiB.empty = rssMiB(server.pid);
    const prefix = `s${size}`;
    // Quiet once a size is cut off: closing its runs on the closed connection only fails.
    const logger = pino({ name: "clawmesh", level: process.env.CLAWMESH_LOG_LEVEL ?? "warn" });
    // The inbox holds one message per idle session and the history session's `size` messages.
    const mesh = await Mesh.connect({ servers: server.url, prefix, instance: INSTANCE, logger, retention: { maxMessages: 2 * size + 10_000 } });
    const ins = await MeshInspector.connect(server.url, prefix);
    const runs: MeshSession[] = [];
    let cut = false;
    /** Close both connections: whatever a cut-off step was doing fails fast. */
    const cutOff = async () => {
      cut = true;
      logger.level = "silent";
      await settle(mesh.close());
      await settle(ins.close());
    };

    /** One step under the size's deadline; a step still running at the deadline is cut off. */
    async function step<T>(label: string, fn: () => Promise<T>): Promise<T> {
      if (cut || performance.now() >= deadline) {
        result.skippedFrom ??= label;
        throw new OverBudget();
      }
      const work = settle(fn());
      let timer: NodeJS.Timeout | undefined;
      const timeUp = new Promise<"time up">((resolve) => (timer = setTimeout(() => resolve("time up"), deadline - performance.now())));
      const first = await Promise.race([work, timeUp]);
      clearTimeout(timer);
      if (first === "time up") {
        result.skippedFrom ??= label;
        log(`${label}: over ${BUDGET_S} s, cutting the size off`);
        await cutOff();
        await work; // settles once its connection is gone
        throw new OverBudget();
      }
      if (first.status === "rejected") throw first.reason;
      return first.value;
    }
    /** Whether one more round of something that last took `lastMs` fits before the deadline. */
    const fits = (lastMs: number) => !cut && deadline - performance.now() > 1.5 * lastMs;

    /** The server's consumers on a stream, durable and ephemeral (a handful here: listing them is cheap). */
    const consumersOn = async (stream: string): Promise<Consumers> => {
      let durable = 0;
      let ephemeral = 0;
      for await (const c of await ins.jsm.consumers.list(stream)) {
        if (c.config.durable_name) durable++;
        else ephemeral++;
      }
      return { durable, ephemeral };
    };
    const inboxConsumers = () => consumersOn(ins.names.inboxStream(INSTANCE));
    const bucketConsumers = () => consumersOn(`KV_${ins.names.sessionBucket()}`);

    try {
      await step("register", async () => {
        const kv = await new Kvm(ins.nc).open(ins.names.sessionBucket(), { bindOnly: true });
        const now = new Date().toISOString();
        const t0 = performance.now();
        let next = 0;
        await Promise.all(
          Array.from({ length: WRITES_IN_FLIGHT }, async () => {
            while (next < size && !cut) {
              const address: SessionAddress = mesh.address(keyOf(next++));
              const { run: _run, thread: _thread, ...plain } = address;
              const record = SessionRecordSchema.parse({ v: 1, address: plain, sessionKey: sessionKeyOf(address), lifecycle: "idle", resumable: true, owner: INSTANCE, createdAt: now, lastActivity: now });
              await kv.put(ins.names.sessionRecordKey(address), JSON.stringify(record));
            }
          }),
        );
        result.registerMs = performance.now() - t0;
        if ((await mesh.sessions.get(keyOf(size - 1))) === undefined) throw new Error("a registered record does not read back through mesh.sessions.get");
      });
      log(`registered in ${for_(result.registerMs!)}`);
      result.rssMiB.registered = rssMiB(server.pid);
      result.consumers.inboxBefore = await step("consumers before", inboxConsumers);
      result.consumers.bucketBefore = await step("consumers before", bucketConsumers);

      await step("open", async () => {
        const lat: number[] = [];
        for (let i = 0; i < OPENS; i++) {
          const t0 = performance.now();
          runs.push(await mesh.sessions.open(keyOf(i)));
          lat.push(performance.now() - t0);
        }
        result.openMs = lat;
      });
      log(`opened ${OPENS} runs, p50 ${ms(quantile(result.openMs!, 0.5))} ms`);

      for (let r = 0; r < ROUNDS && (r === 0 || fits(result.listMs.at(-1)!)); r++) {
        await step("list", async () => {
          const t0 = performance.now();
          const all = await mesh.sessions.list();
          result.listMs.push(performance.now() - t0);
          result.listed = all.length;
        });
        log(`list round ${r + 1}: ${ms(result.listMs.at(-1)!)} ms`);
      }
      if (result.listed !== size) throw new Error(`mesh.sessions.list() returned ${result.listed} of ${size} registered sessions`);

      for (let r = 0; r < ROUNDS && (r === 0 || fits(result.sweepMs.at(-1)!)); r++) {
        await step("sweep", async () => {
          const t0 = performance.now();
          const idled = await mesh.admin.sweep();
          result.sweepMs.push(performance.now() - t0);
          if (idled.length > 0) throw new Error(`the janitor idled ${idled.length} sessions whose runs are open`);
        });
        log(`sweep round ${r + 1}: ${ms(result.sweepMs.at(-1)!)} ms`);
      }

      await step("close runs", async () => {
        for (const run of runs.splice(0)) await run.close();
      });
      result.consumers.inboxAfter = await step("consumers after", inboxConsumers);
      result.consumers.bucketAfter = await step("consumers after", bucketConsumers);
      result.rssMiB.end = rssMiB(server.pid);

      await step("idle sessions", async () => {
        const at = Date.now();
        let next = OPENS;
        await Promise.all(
          Array.from({ length: WRITES_IN_FLIGHT }, async () => {
            while (next < size && !cut) {
              const address = mesh.address(keyOf(next++));
              const sent = await mesh.send({ from: SENDER, to: address, body: "idle" });
              const record = SeenRecordSchema.parse({ v: 1, kind: "delta", groups: [{ at, ids: [`${INSTANCE}/${sent.id}`] }], through: sent.seq });
              await ins.js.publish(ins.names.seenSubject(address), JSON.stringify(record), { expect: { lastSubjectSequence: 0 } });
            }
          }),
        );
        result.idleSessions = size - OPENS;
        // The opened runs are closed: their consumers go as the server's idle reaping would take them.
        const stream = ins.names.inboxStream(INSTANCE);
        for (let i = 0; i < OPENS; i++) await ins.jsm.consumers.delete(stream, ins.names.sessionConsumer(mesh.address(keyOf(i))));
        const back = [reconnected(mesh.status()), reconnected(ins.nc.status())];
        await server.stop();
        await server.restart();
        await Promise.all(back);
        result.rssMiB.idleRestarted = rssMiB(server.pid);
      });
      log(`${size} idle sessions: server RSS ${result.rssMiB.idleRestarted!.toFixed(0)} MiB after a restart`);

      await step("history", async () => {
        const key = "agent:history:scale:h";
        const t0 = performance.now();
        let next = 0;
        await Promise.all(
          Array.from({ length: WRITES_IN_FLIGHT }, async () => {
            while (next < size && !cut) {
              next++;
              await mesh.send({ from: SENDER, to: key, body: "history" });
            }
          }),
        );
        const inbox = await mesh.sessions.openInbox(key);
        try {
          for (let got = 0; got < size; ) {
            const batch = await inbox.take({ max: 1000 });
            if (batch.messages.length === 0) throw new Error(`the history session gave ${got} of ${size} messages`);
            got += batch.messages.length;
            await batch.confirm();
          }
        } finally {
          await inbox.close();
        }
        const fillMs = performance.now() - t0;
        const openMs: number[] = [];
        const firstTakeMs: number[] = [];
        for (let i = 0; i < HISTORY_OPENS; i++) {
          const t1 = performance.now();
          const run = await mesh.sessions.open(key);
          const t2 = performance.now();
          try {
            const batch = await run.take({ max: 1000 });
            if (batch.messages.length > 0) throw new Error(`a run of the history session was shown ${batch.messages.length} surfaced messages again`);
          } finally {
            firstTakeMs.push(performance.now() - t2);
            await run.close();
          }
          openMs.push(t2 - t1);
        }
        const subject = ins.names.seenSubject(mesh.address(key));
        const info = await ins.jsm.streams.info(ins.names.seenStream(INSTANCE), { subjects_filter: subject });
        result.history = { messages: size, fillMs, openMs, firstTakeMs, seenRecords: info.state.subjects?.[subject] ?? 0 };
      });
      log(`history of ${size}: open p50 ${ms(quantile(result.history!.openMs, 0.5))} ms`);
    } catch (err) {
      if (!(err instanceof OverBudget)) throw err;
      result.rssMiB.end ??= rssMiB(server.pid);
    } finally {
      // Runs opened before a cut-off: closing them fails fast on the closed connection.
      for (const s of await Promise.allSettled(runs.splice(0).map((run) => run.close()))) if (s.status === "rejected" && !cut) throw s.reason;
      if (!cut) {
        await mesh.close();
        await ins.close();
      }
    }
  });
  result.totalMs = performance.now() - started;
  log(`done in ${for_(result.totalMs)}`);
  return result;
}

const results: SizeResult[] = [];
for (const size of SIZES) {
  process.stderr.write(`${size} sessions (budget ${BUDGET_S} s)\n`);
  results.push(await runSize(size));
}

const skipped = `skipped (over ${BUDGET_S} s)`;
const order = ["register", "consumers before", "open", "list", "sweep", "close runs", "consumers after", "idle sessions", "history"];
/** A cell, or "skipped" when the size was cut off at or before `stepName`. */
const cell = (r: SizeResult, stepName: string, value: () => string) => {
  if (r.skippedFrom !== undefined && order.indexOf(r.skippedFrom) <= order.indexOf(stepName)) return skipped;
  return value();
};
const driftOf = (xs: readonly number[]) => (xs.length < 2 ? "n/a" : `${(xs.at(-1)! / xs[0]!).toFixed(2)}${xs.at(-1)! / xs[0]! > DRIFT_LIMIT ? "!" : ""}`);
const rounds = (xs: readonly number[]) => `${ms(xs[0]!)} / ${ms(xs.at(-1)!)} ms (${xs.length} rounds, drift ${driftOf(xs)})`;
const mib = (x: number | undefined) => (x === undefined || Number.isNaN(x) ? "?" : x.toFixed(0));
/** KiB per item of an RSS growth in MiB. */
const kibEach = (from: number | undefined, to: number | undefined, n: number) => (from === undefined || to === undefined || Number.isNaN(from) || Number.isNaN(to) ? Number.NaN : ((to - from) * 1024) / n);
const kib = (x: number) => (Number.isNaN(x) ? "?" : x.toFixed(1));
const idleCost = (r: SizeResult) => `${kib(kibEach(r.rssMiB.empty, r.rssMiB.idleRestarted, r.size))} KiB (RSS ${mib(r.rssMiB.empty)} empty, ${mib(r.rssMiB.idleRestarted)} MiB restarted with them)`;
const count = (x: Consumers | undefined) => (x === undefined ? "?" : x.ephemeral === 0 ? `${x.durable}` : `${x.durable + x.ephemeral} (${x.ephemeral} ephemeral)`);

const rows: [string, (r: SizeResult) => string][] = [
  ["register N sessions (records)", (r) => cell(r, "register", () => `${for_(r.registerMs!)} (${Math.round(r.size / (r.registerMs! / 1000))}/s)`)],
  [`open a run, p50 / p99 of ${OPENS}`, (r) => cell(r, "open", () => `${ms(quantile(r.openMs!, 0.5))} / ${ms(quantile(r.openMs!, 0.99))} ms`)],
  ["open, first 10 / last 10 (median)", (r) => cell(r, "open", () => `${ms(median(r.openMs!.slice(0, 10)))} / ${ms(median(r.openMs!.slice(-10)))} ms`)],
  ["sessions.list() all, first / last", (r) => cell(r, "list", () => rounds(r.listMs))],
  ["janitor sweep, first / last", (r) => cell(r, "sweep", () => rounds(r.sweepMs))],
  ["server RSS empty / registered / end", (r) => `${mib(r.rssMiB.empty)} / ${mib(r.rssMiB.registered)} / ${mib(r.rssMiB.end)} MiB`],
  ["server memory per idle session (after a restart)", (r) => cell(r, "idle sessions", () => idleCost(r))],
  [`open a run, history of N surfaced: p50 / max of ${HISTORY_OPENS}`, (r) => cell(r, "history", () => `${ms(quantile(r.history!.openMs, 0.5))} / ${ms(Math.max(...r.history!.openMs))} ms (first / last ${ms(r.history!.openMs[0]!)} / ${ms(r.history!.openMs.at(-1)!)})`)],
  ["  its first take (nothing pending), p50", (r) => cell(r, "history", () => `${ms(quantile(r.history!.firstTakeMs, 0.5))} ms`)],
  ["  history: fill (send, take, confirm) / seen records", (r) => cell(r, "history", () => `${for_(r.history!.fillMs)} / ${r.history!.seenRecords}`)],
  ["inbox stream consumers before / after", (r) => `${count(r.consumers.inboxBefore)} / ${count(r.consumers.inboxAfter)}`],
  ["session bucket consumers before / after", (r) => `${count(r.consumers.bucketBefore)} / ${count(r.consumers.bucketAfter)}`],
  ["wall time for the size", (r) => for_(r.totalMs)],
];
console.log("");
printTable(
  ["measure", ...results.map((r) => `${r.size} sessions`)],
  rows.map(([name, f]) => [name, ...results.map(f)]),
);
console.log(`\ndrift = last round / first round ("!" above ${DRIFT_LIMIT}); consumers after = once the ${OPENS} runs are closed; budget ${BUDGET_S} s per size`);

const record = { at: new Date().toISOString(), server: version, node: process.version, cpus: cpus().length, config: { sizes: SIZES, budgetS: BUDGET_S, rounds: ROUNDS, opens: OPENS }, results };
const dir = join(process.cwd(), "bench", "results");
mkdirSync(dir, { recursive: true });
const file = join(dir, `scale-${record.at.replace(/[:.]/g, "-")}.json`);
writeFileSync(file, `${JSON.stringify(record, null, 2)}\n`);
console.log(`JSON: ${file}`);
