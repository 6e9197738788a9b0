import { describe, expect, it } from "vitest";
import { readFileSync, readdirSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";
import * as entry from "../src/index.js";
import * as openclawEntry from "../src/openclaw/index.js";
import * as testingEntry from "../src/testing/index.js";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    return statSync(p).isDirectory() ? sources(p) : p.endsWith(".ts") && !p.endsWith(".d.ts") ? [p] : [];
  });
}

/**
 * Errors the mesh raises only inside itself: each is caught and turned into a public error before
 * it reaches a caller (the publish path turns them into UnknownInstanceError / SendFailedError).
 */
const INTERNAL_ERRORS = new Set(["NoStreamError", "AckTimeoutError"]);

describe("public API", () => {
  it("compiles a consumer's code against clawmesh, clawmesh/testing and clawmesh/openclaw alone", () => {
    const configPath = join(root, "test/fixtures/consumer/tsconfig.json");
    const config = ts.getParsedCommandLineOfConfigFile(configPath, {}, { ...ts.sys, onUnRecoverableConfigFileDiagnostic: (d) => { throw new Error(String(d.messageText)); } })!;
    const program = ts.createProgram(config.fileNames, config.options);
    const diagnostics = ts.getPreEmitDiagnostics(program).map((d) => ts.flattenDiagnosticMessageText(d.messageText, "\n"));
    expect(config.fileNames).toHaveLength(1);
    expect(diagnostics).toEqual([]);
  }, 120_000);

  it("exports every error a caller can receive, each a MeshError with a stable code", () => {
    const declared = sources(join(root, "src")).flatMap((file) => [...readFileSync(file, "utf8").matchAll(/export class (\w+) extends \w*Error\b/g)].map((m) => m[1]!));
    const exported = { ...entry, ...openclawEntry } as Record<string, unknown>;
    const missing = declared.filter((name) => !INTERNAL_ERRORS.has(name) && typeof exported[name] !== "function");
    expect(missing).toEqual([]);
    for (const name of declared.filter((n) => !INTERNAL_ERRORS.has(n) && n !== "MeshError")) {
      expect((exported[name] as { prototype: unknown }).prototype).toBeInstanceOf(entry.MeshError);
    }
  });

  it("keeps wire internals out of the main entry and test helpers in clawmesh/testing", () => {
    const names = Object.keys(entry);
    for (const internal of ["EnvelopeSchema", "decodeEnvelope", "encodeEnvelope", "Names", "KvStore", "sendEnvelope", "LocalNatsServer"]) expect(names).not.toContain(internal);
    expect(Object.keys(testingEntry).sort()).toEqual(["LocalNatsServer", "Latch", "MeshInspector", "TcpProxy", "TestCluster", "startTestServer", "uniquePrefix"].sort());
  });
});
