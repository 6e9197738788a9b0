/**
 * Benchmark plumbing: a private nats-server, alternating rounds of raw-NATS and mesh variants of
 * each measure under identical connection options, medians, ratios, a table and a JSON record.
 */
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir, cpus } from "node:os";
import { join } from "node:path";
import { LocalNatsServer } from "../src/server/local-server.js";

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
}

export interface BenchContext {
  readonly server: LocalNatsServer;
  readonly payloadBytes: number;
}

export async function withServer<T>(fn: (server: LocalNatsServer) => Promise<T>): Promise<T> {
  const storeDir = mkdtempSync(join(tmpdir(), "clawmesh-bench-"));
  const server = await LocalNatsServer.start({ storeDir });
  try {
    return await fn(server);
  } finally {
    await server.stop();
    rmSync(storeDir, { recursive: true, force: true });
  }
}

export const median = (xs: readonly number[]) => quantile(xs, 0.5);

export function quantile(xs: readonly number[], q: number): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
}

export async function runMeasures(measures: readonly Measure[], rounds: number, config: Record<string, unknown>, version: string): Promise<void> {
  const results = [];
  for (const m of measures) {
    const raw: Sample[] = [];
    const mesh: Sample[] = [];
    for (let r = 0; r < rounds; r++) {
      const order = r % 2 === 0 ? (["raw", "mesh"] as const) : (["mesh", "raw"] as const);
      for (const which of order) {
        const s = await m[which](r);
        (which === "raw" ? raw : mesh).push(s);
        process.stderr.write(`  ${m.name} round ${r + 1} ${which}: ${s.value.toFixed(m.unit === "ms" ? 3 : 0)} ${m.unit}\n`);
      }
    }
    const rawMed = median(raw.map((s) => s.value));
    const meshMed = median(mesh.map((s) => s.value));
    const extras: Record<string, { raw: number; mesh: number }> = {};
    for (const key of m.extras ?? []) {
      extras[key] = { raw: median(raw.map((s) => s.extra?.[key] ?? Number.NaN)), mesh: median(mesh.map((s) => s.extra?.[key] ?? Number.NaN)) };
    }
    results.push({ name: m.name, unit: m.unit, betterIs: m.betterIs, target: m.target, raw: rawMed, mesh: meshMed, ratio: meshMed / rawMed, extras, rawSamples: raw, meshSamples: mesh });
  }
  const rows = results.map((r) => [
    r.name,
    `${fmt(r.raw)} ${r.unit}`,
    `${fmt(r.mesh)} ${r.unit}`,
    `${r.ratio.toFixed(2)}x`,
    r.target ?? "",
    Object.entries(r.extras)
      .map(([k, v]) => `${k}: raw ${fmt(v.raw)} / mesh ${fmt(v.mesh)} (${(v.mesh / v.raw).toFixed(2)}x)`)
      .join("; "),
  ]);
  printTable(["measure", "raw NATS (median)", "mesh (median)", "mesh/raw", "target", "also"], rows);
  const record = { at: new Date().toISOString(), server: version, node: process.version, cpus: cpus().length, rounds, config, results };
  const dir = join(process.cwd(), "bench", "results");
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `bench-${record.at.replace(/[:.]/g, "-")}.json`);
  writeFileSync(file, `${JSON.stringify(record, null, 2)}\n`);
  console.log(`\nnats-server ${version}, ${rounds} alternating rounds; JSON: ${file}`);
}

function fmt(n: number): string {
  return n >= 100 ? n.toFixed(0) : n.toFixed(3);
}

function printTable(head: string[], rows: string[][]): void {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(" | ")} |`;
  console.log(line(head));
  console.log(`|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`);
  for (const r of rows) console.log(line(r));
}
