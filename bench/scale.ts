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
 *   and at the end (after the runs are closed).
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
import { pino } from "pino";
import { Mesh, sessionKeyOf, type MeshSession, type SessionAddress } from "../src/index.js";
import { MeshInspector } from "../src/testing/index.js";
import { SessionRecordSchema } from "../src/wire/index.js";
import { DRIFT_LIMIT, installFailureGuards, median, printTable, quantile, rssMiB, settle, withServer } from "./harness.js";

installFailureGuards();

const SIZES = (process.env.BENCH_SCALE_SIZES ?? "1000,10000,100000").split(",").map((s) => Number(s.trim()));
const BUDGET_S = Number(process.env.BENCH_SCALE_BUDGET_S ?? 300);
const ROUNDS = Number(process.env.BENCH_SCALE_ROUNDS ?? 3);
const OPENS = 50;
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
  rssMiB: { empty?: number; registered?: number; end?: number };
  consumers: { inboxBefore?: Consumers; inboxAfter?: Consumers; bucketBefore?: Consumers; bucketAfter?: Consumers };
  skippedFrom?: string;
  totalMs: number;
}

/** A session key per index: 50 agents, one channel, one session each. */
const keyOf = (i: number) => `agent:w${i % 50}:scale:s${i}`;

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
    const mesh = await Mesh.connect({ servers: server.url, prefix, instance: INSTANCE, logger });
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
const order = ["register", "consumers before", "open", "list", "sweep", "close runs", "consumers after"];
/** A cell, or "skipped" when the size was cut off at or before `stepName`. */
const cell = (r: SizeResult, stepName: string, value: () => string) => {
  if (r.skippedFrom !== undefined && order.indexOf(r.skippedFrom) <= order.indexOf(stepName)) return skipped;
  return value();
};
const driftOf = (xs: readonly number[]) => (xs.length < 2 ? "n/a" : `${(xs.at(-1)! / xs[0]!).toFixed(2)}${xs.at(-1)! / xs[0]! > DRIFT_LIMIT ? "!" : ""}`);
const rounds = (xs: readonly number[]) => `${ms(xs[0]!)} / ${ms(xs.at(-1)!)} ms (${xs.length} rounds, drift ${driftOf(xs)})`;
const mib = (x: number | undefined) => (x === undefined || Number.isNaN(x) ? "?" : x.toFixed(0));
const count = (x: Consumers | undefined) => (x === undefined ? "?" : x.ephemeral === 0 ? `${x.durable}` : `${x.durable + x.ephemeral} (${x.ephemeral} ephemeral)`);

const rows: [string, (r: SizeResult) => string][] = [
  ["register N sessions (records)", (r) => cell(r, "register", () => `${for_(r.registerMs!)} (${Math.round(r.size / (r.registerMs! / 1000))}/s)`)],
  [`open a run, p50 / p99 of ${OPENS}`, (r) => cell(r, "open", () => `${ms(quantile(r.openMs!, 0.5))} / ${ms(quantile(r.openMs!, 0.99))} ms`)],
  ["open, first 10 / last 10 (median)", (r) => cell(r, "open", () => `${ms(median(r.openMs!.slice(0, 10)))} / ${ms(median(r.openMs!.slice(-10)))} ms`)],
  ["sessions.list() all, first / last", (r) => cell(r, "list", () => rounds(r.listMs))],
  ["janitor sweep, first / last", (r) => cell(r, "sweep", () => rounds(r.sweepMs))],
  ["server RSS empty / registered / end", (r) => `${mib(r.rssMiB.empty)} / ${mib(r.rssMiB.registered)} / ${mib(r.rssMiB.end)} MiB`],
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
