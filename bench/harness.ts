/**
 * Benchmark plumbing: a private nats-server, alternating rounds of raw-NATS and mesh variants of
 * each measure under identical connection options, medians, ratios, round-over-round drift, a
 * table and a JSON record. Also the hygiene every bench script shares: process-level guards that
 * turn an unhandled rejection into a loud, non-zero failure (after killing the server), and a
 * tracker for work started in the background so it is settled before a connection closes.
 */
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir, cpus } from "node:os";
import { join } from "node:path";
import { LocalNatsServer } from "../src/testing/index.js";

export interface Sample {
  /** Higher is better for rates, lower for latencies. */
  readonly value: number;
  readonly extra?: Record<string, number>;
}

export interface Measure {
  readonly name: string;
  readonly unit: "msg/s" | "ms";
  readonly betterIs: "higher" | "lower";
  readonly target?: string;
  /** Each variant runs once per round; rounds alternate which goes first. */
  readonly raw: (round: number) => Promise<Sample>;
  readonly mesh: (round: number) => Promise<Sample>;
  /** Extra figures read off each mesh sample (e.g. p99 next to p50). */
  readonly extras?: readonly string[];
  /** Lines printed under the table: checks of targets that need more than the mesh/raw ratio. */
  readonly checks?: (raw: readonly Sample[], mesh: readonly Sample[]) => string[];
}

// ---------------------------------------------------------------------------------------------
// Failing loudly

const fatalCleanups = new Set<() => Promise<void>>();
let dying = false;

/** Run `fn` if the process is about to die of an unhandled error (e.g. kill the server child). */
export function onFatal(fn: () => Promise<void>): () => void {
  fatalCleanups.add(fn);
  return () => fatalCleanups.delete(fn);
}

function fatal(kind: string, err: unknown): void {
  process.exitCode = 1;
  const detail = err instanceof Error ? (err.stack ?? err.message) : String(err);
  process.stderr.write(`\n${"=".repeat(72)}\nBENCH FAILED: ${kind}\n${detail}\n${"=".repeat(72)}\n`);
  if (dying) return;
  dying = true;
  const cleanups = Promise.allSettled([...fatalCleanups].map((fn) => fn()));
  const cap = new Promise((resolve) => setTimeout(resolve, 5000).unref());
  void Promise.race([cleanups, cap]).then(() => process.exit(1));
}

/**
 * Install once at the top of a bench script. Any unhandled rejection or uncaught exception fails
 * the run: a banner with the stack on stderr, the server killed, exit code 1.
 */
export function installFailureGuards(): void {
  process.on("unhandledRejection", (reason) => fatal("unhandled rejection (a promise nobody awaited failed)", reason));
  process.on("uncaughtException", (err) => fatal("uncaught exception", err));
}

// ---------------------------------------------------------------------------------------------
// Background work

/** Never rejects: the outcome of `p`, to await later (e.g. in a `finally`). */
export function settle<T>(p: Promise<T>): Promise<PromiseSettledResult<T>> {
  return p.then(
    (value) => ({ status: "fulfilled", value }) as const,
    (reason: unknown) => ({ status: "rejected", reason }) as const,
  );
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * Work started without awaiting it on the spot (a delayed completion, a responder loop). Each
 * tracked promise gets a handler at once, so it can never become an unhandled rejection; `drain()`
 * waits for all of them and throws the first failure. Drain before closing what they use.
 */
export class Background {
  readonly #pending = new Set<Promise<unknown>>();
  readonly #errors: unknown[] = [];

  track(p: Promise<unknown>): void {
    const settled = p.then(
      () => undefined,
      (err: unknown) => void this.#errors.push(err),
    );
    this.#pending.add(settled);
    void settled.finally(() => this.#pending.delete(settled));
  }

  /** Run `fn` after `ms`, tracked from now (the timer counts as pending work). */
  after(ms: number, fn: () => Promise<unknown>): void {
    this.track(sleep(ms).then(fn));
  }

  get size(): number {
    return this.#pending.size;
  }

  async drain(): Promise<void> {
    while (this.#pending.size > 0) await Promise.all([...this.#pending]);
    const [first, ...rest] = this.#errors.splice(0);
    if (first !== undefined) {
      if (rest.length > 0) process.stderr.write(`  (${rest.length} more background failure(s) after the first)\n`);
      throw first;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Server

export async function withServer<T>(fn: (server: LocalNatsServer) => Promise<T>): Promise<T> {
  const storeDir = mkdtempSync(join(tmpdir(), "clawmesh-bench-"));
  const server = await LocalNatsServer.start({ storeDir });
  const forget = onFatal(async () => {
    await server.kill();
    rmSync(storeDir, { recursive: true, force: true });
  });
  try {
    return await fn(server);
  } finally {
    forget();
    await server.stop();
    rmSync(storeDir, { recursive: true, force: true });
  }
}

/** Resident set size of a process in MiB (Linux /proc), NaN when it cannot be read. */
export function rssMiB(pid: number | undefined): number {
  if (pid === undefined) return Number.NaN;
  try {
    const m = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) / 1024 : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

// ---------------------------------------------------------------------------------------------
// Statistics and output

export const median = (xs: readonly number[]) => quantile(xs, 0.5);

export function quantile(xs: readonly number[], q: number): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
}

/** A run fails when a mesh measure got this much worse from its first round to its last. */
export const DRIFT_LIMIT = 1.2;

/**
 * Round-over-round drift of one variant: last/first for latencies, first/last for rates, so above
 * 1 always means "got worse". 1 with a single round.
 */
export function drift(samples: readonly Sample[], betterIs: "higher" | "lower", pick: (s: Sample) => number = (s) => s.value): number {
  if (samples.length < 2) return 1;
  const first = pick(samples[0]!);
  const last = pick(samples[samples.length - 1]!);
  return betterIs === "lower" ? last / first : first / last;
}

export interface RunOutcome {
  /** Mesh measures whose drift exceeded the limit while raw stayed within it. */
  readonly drifting: readonly string[];
  readonly file: string;
}

/**
 * Runs every measure for `rounds` alternating rounds. `probe` is read after each variant and kept
 * in the JSON beside the sample (e.g. this process's heap and the server's RSS), to tell a leak in
 * the process from one on the server when a measure drifts.
 */
export async function runMeasures(
  measures: readonly Measure[],
  rounds: number,
  config: Record<string, unknown>,
  version: string,
  probe: () => Record<string, number> = () => ({}),
): Promise<RunOutcome> {
  const results = [];
  for (const m of measures) {
    const raw: Sample[] = [];
    const mesh: Sample[] = [];
    const probes: { round: number; variant: "raw" | "mesh"; after: Record<string, number> }[] = [];
    for (let r = 0; r < rounds; r++) {
      const order = r % 2 === 0 ? (["raw", "mesh"] as const) : (["mesh", "raw"] as const);
      for (const which of order) {
        const s = await m[which](r);
        (which === "raw" ? raw : mesh).push(s);
        probes.push({ round: r + 1, variant: which, after: probe() });
        process.stderr.write(`  ${m.name} round ${r + 1} ${which}: ${s.value.toFixed(m.unit === "ms" ? 3 : 0)} ${m.unit}\n`);
      }
    }
    const rawMed = median(raw.map((s) => s.value));
    const meshMed = median(mesh.map((s) => s.value));
    const extras: Record<string, { raw: number; mesh: number; rawDrift: number; meshDrift: number }> = {};
    for (const key of m.extras ?? []) {
      const pick = (s: Sample) => s.extra?.[key] ?? Number.NaN;
      extras[key] = { raw: median(raw.map(pick)), mesh: median(mesh.map(pick)), rawDrift: drift(raw, m.betterIs, pick), meshDrift: drift(mesh, m.betterIs, pick) };
    }
    results.push({
      name: m.name,
      unit: m.unit,
      betterIs: m.betterIs,
      target: m.target,
      raw: rawMed,
      mesh: meshMed,
      ratio: meshMed / rawMed,
      rawDrift: drift(raw, m.betterIs),
      meshDrift: drift(mesh, m.betterIs),
      extras,
      checks: m.checks?.(raw, mesh) ?? [],
      rawSamples: raw,
      meshSamples: mesh,
      probes,
    });
  }
  const flag = (d: number) => (d > DRIFT_LIMIT ? "!" : "");
  const rows = results.map((r) => [
    r.name,
    `${fmt(r.raw)} ${r.unit}`,
    `${fmt(r.mesh)} ${r.unit}`,
    `${r.ratio.toFixed(2)}x`,
    `${r.rawDrift.toFixed(2)}${flag(r.rawDrift)} / ${r.meshDrift.toFixed(2)}${flag(r.meshDrift)}`,
    r.target ?? "",
    Object.entries(r.extras)
      .map(([k, v]) => `${k}: raw ${fmt(v.raw)} / mesh ${fmt(v.mesh)} (${(v.mesh / v.raw).toFixed(2)}x)`)
      .join("; "),
  ]);
  printTable(["measure", "raw NATS (median)", "mesh (median)", "mesh/raw", "drift raw / mesh", "target", "also"], rows);

  const checkLines = results.flatMap((r) => r.checks);
  if (checkLines.length > 0) console.log(`\n${checkLines.join("\n")}`);

  const drifting: string[] = [];
  const notes: string[] = [];
  for (const r of results) {
    if (r.meshDrift <= DRIFT_LIMIT) continue;
    if (r.rawDrift <= DRIFT_LIMIT) {
      drifting.push(r.name);
      notes.push(`DRIFT  ${r.name}: mesh ${r.meshDrift.toFixed(2)} > ${DRIFT_LIMIT} while raw stayed at ${r.rawDrift.toFixed(2)}`);
    } else {
      notes.push(
        `noisy  ${r.name}: mesh ${r.meshDrift.toFixed(2)} and raw ${r.rawDrift.toFixed(2)} both drifted (mesh/raw drift ${(r.meshDrift / r.rawDrift).toFixed(2)}): not counted; ` +
          "the machine was noisy, or something on the shared server slowed both (re-run; check server consumers if it persists)",
      );
    }
  }
  console.log(`\ndrift = last round / first round (rates: first / last; above 1 is worse); a run fails on mesh drift > ${DRIFT_LIMIT} with raw drift <= ${DRIFT_LIMIT}`);
  for (const n of notes) console.log(n);

  const record = { at: new Date().toISOString(), server: version, node: process.version, cpus: cpus().length, rounds, config, driftLimit: DRIFT_LIMIT, drifting, results };
  const dir = join(process.cwd(), "bench", "results");
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `bench-${record.at.replace(/[:.]/g, "-")}.json`);
  writeFileSync(file, `${JSON.stringify(record, null, 2)}\n`);
  console.log(`\nnats-server ${version}, ${rounds} alternating rounds; JSON: ${file}`);
  return { drifting, file };
}

export function fmt(n: number): string {
  return n >= 100 ? n.toFixed(0) : n.toFixed(3);
}

export function printTable(head: string[], rows: string[][]): void {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(" | ")} |`;
  console.log(line(head));
  console.log(`|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`);
  for (const r of rows) console.log(line(r));
}
