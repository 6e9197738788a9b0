/**
 * A bounded soak (not a test): steady sends from one process while reader processes are SIGKILLed
 * at random and the server is SIGKILLed and restarted once; at the end, every acknowledged send must
 * have been surfaced exactly once. Prints a table of what was injected and what came out.
 *
 *   npm run bench:soak        (SOAK_SECONDS=60 SOAK_RATE=200 to change the run)
 *
 * Exits non-zero when an acknowledged send was lost or surfaced twice, and (loudly) on any
 * unhandled rejection.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Mesh } from "../src/index.js";
import { LocalNatsServer } from "../src/testing/index.js";
import { SessionProcess } from "../test/harness/child.js";
import { smallRetention } from "../test/harness/mesh.js";
import { installFailureGuards, onFatal, sleep } from "./harness.js";

installFailureGuards();

const SECONDS = Number(process.env.SOAK_SECONDS ?? 60);
const RATE = Number(process.env.SOAK_RATE ?? 200);
const KEY = "agent:b:main";

const dir = mkdtempSync(join(tmpdir(), "clawmesh-soak-"));
const server = await LocalNatsServer.start({ storeDir: dir });
onFatal(async () => {
  await server.kill();
  rmSync(dir, { recursive: true, force: true });
});
const prefix = "soak";
const sender = await Mesh.connect({ servers: server.url, prefix, instance: "gw1", retention: smallRetention, connection: { maxReconnectAttempts: -1, reconnectTimeWait: 100 } });
const acked = new Set<string>();
const failed = new Set<string>();
const shown: string[] = [];
let readerKills = 0;
let serverRestarts = 0;
const inbox = { ackWaitMs: 3000, leaseTtlMs: 3000, fetchExpiresMs: 1000 };

const end = Date.now() + SECONDS * 1000;
let n = 0;
const sending = (async () => {
  while (Date.now() < end) {
    const batch = Array.from({ length: Math.max(1, Math.round(RATE / 10)) }, () => `s${n++}`);
    await Promise.all(batch.map((id) => sender.send({ id, from: "agent:a:main", to: KEY, body: id }).then(() => acked.add(id), () => failed.add(id))));
    await sleep(100);
  }
})();

/** A reader process takes and confirms until told to stop or killed. */
async function readFor(ms: number, kill: boolean): Promise<void> {
  const p = await SessionProcess.start({ url: server.url, prefix, instance: "gw1", sessionKey: KEY, inbox });
  const stopAt = Date.now() + ms;
  try {
    while (Date.now() < stopAt) {
      p.send({ op: "take", max: 200 });
      const t = await p.expect("taken");
      if (kill && t.messages.length > 0 && Math.random() < 0.3) {
        readerKills++;
        await p.sigkill(); // taken, not confirmed: must come back once
        return;
      }
      p.send({ op: "confirm" });
      await p.expect("confirmed");
      shown.push(...t.messages.map((m) => m.id));
      if (t.messages.length === 0) await sleep(50);
    }
  } catch {
    // the server restart can end a reader mid-request; the next one carries on
  }
  await p.sigkill();
}

const reading = (async () => {
  let restarted = false;
  while (Date.now() < end) {
    await readFor(2000 + Math.random() * 3000, true);
    if (!restarted && Date.now() > end - (SECONDS * 1000) / 2) {
      restarted = true;
      serverRestarts++;
      await server.kill();
      await server.restart();
    }
  }
})();

// Both loops end by the clock; wait for both even if one failed, then fail on either.
for (const s of await Promise.allSettled([sending, reading])) if (s.status === "rejected") throw s.reason;
// Drain what is left with a well-behaved reader.
for (let i = 0; i < 5; i++) await readFor(2000, false);

const counts = new Map<string, number>();
for (const id of shown) counts.set(id, (counts.get(id) ?? 0) + 1);
const lost = [...acked].filter((id) => !counts.has(id)).length;
const doubled = [...counts.values()].filter((c) => c > 1).length;
console.log(`| soak ${SECONDS}s, ~${RATE} msg/s | value |`);
console.log("|---|---|");
for (const [k, v] of [
  ["sends attempted", n],
  ["acknowledged", acked.size],
  ["reported failed", failed.size],
  ["surfaced", shown.length],
  ["reader SIGKILLs", readerKills],
  ["server SIGKILL + restart", serverRestarts],
  ["acknowledged but lost", lost],
  ["surfaced twice", doubled],
] as const)
  console.log(`| ${k} | ${v} |`);
await sender.close();
await server.stop();
rmSync(dir, { recursive: true, force: true });
process.exit(lost === 0 && doubled === 0 ? 0 : 1);
