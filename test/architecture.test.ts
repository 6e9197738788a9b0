import { describe, expect, it } from "vitest";
import { readFileSync, readdirSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const src = resolve(dirname(fileURLToPath(import.meta.url)), "../src");

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    return statSync(p).isDirectory() ? files(p) : p.endsWith(".ts") ? [p] : [];
  });
}

/** Relative imports of each source file (type-only imports included: they are dependencies too). */
function graph(): Map<string, string[]> {
  const g = new Map<string, string[]>();
  for (const file of files(src)) {
    const text = readFileSync(file, "utf8");
    const deps = [...text.matchAll(/(?:import|export)[^'"]*?from\s+["'](\.[^"']+)["']/g)].map((m) => relative(src, resolve(dirname(file), m[1]!.replace(/\.js$/, ".ts"))));
    g.set(relative(src, file), deps);
  }
  return g;
}

/** Layers from the bottom up; a module may import only from its own layer or below. */
const LAYERS = [["errors.ts", "address"], ["wire", "log.ts", "config.ts"], ["transport", "topology", "mesh-context.ts", "server", "handoff"], ["inbox"], ["registry"], ["tasks"], ["session"], ["tools", "client"], ["mesh.ts"], ["index.ts", "cli", "openclaw", "testing", "ui"]];

function layerOf(path: string): number {
  const top = path.split("/")[0]!;
  const i = LAYERS.findIndex((l) => l.includes(top));
  if (i < 0) throw new Error(`${path} belongs to no layer: add its folder to LAYERS`);
  return i;
}

describe("architecture", () => {
  it("has no import cycles", () => {
    const g = graph();
    const state = new Map<string, "visiting" | "done">();
    const cycles: string[] = [];
    const visit = (n: string, path: string[]) => {
      if (state.get(n) === "done") return;
      if (state.get(n) === "visiting") {
        cycles.push([...path.slice(path.indexOf(n)), n].join(" -> "));
        return;
      }
      state.set(n, "visiting");
      for (const d of g.get(n) ?? []) visit(d, [...path, n]);
      state.set(n, "done");
    };
    for (const n of g.keys()) visit(n, []);
    expect(cycles).toEqual([]);
  });

  it("points dependencies downward only: address <- wire <- topology <- inbox <- registry <- tasks <- session <- tools/client <- mesh <- cli/openclaw/testing", () => {
    const upward: string[] = [];
    for (const [file, deps] of graph()) for (const d of deps) if (layerOf(d) > layerOf(file)) upward.push(`${file} -> ${d}`);
    expect(upward).toEqual([]);
  });
});
