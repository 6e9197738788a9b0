import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LocalNatsServer } from "./src/server/local-server.js";
import { ensureOpenClaw, Gateway } from "./test/e2e/openclaw.js";
import { ScriptedModel } from "./test/e2e/model-server.js";
const nats = await LocalNatsServer.start({ storeDir: mkdtempSync(join(tmpdir(), "probe-")) });
const model = new ScriptedModel();
model.define("inbox", (_req, step) => (step === 0 ? { calls: [{ name: "mesh_inbox", args: {} }] } : { text: "done" }));
const modelPort = await model.start();
const install = await ensureOpenClaw();
let t = Date.now();
const gw = await Gateway.start(install, { instance: "gw-a", natsUrl: nats.url, prefix: "e2e", modelPort });
console.log("gateway ready in", Date.now() - t, "ms");
t = Date.now();
try {
  const r = await gw.turn("agent:main:main", "check inbox SCRIPT=inbox");
  console.log("turn in", Date.now() - t, "ms:", r.text);
  console.log(JSON.stringify(r.json).slice(0, 600));
} catch (e) { console.log("turn failed", String(e).slice(0, 3000)); }
console.log("requests", model.requests.length, model.requests.map((q) => q.tools.filter((x) => x.startsWith("mesh")).join(",")));
const last = model.requests.at(-1);
console.log(JSON.stringify(last?.messages.slice(-3)).slice(0, 1500));
console.log("MESHLOG", gw.meshLog().slice(0, 2000));
console.log("OUT", gw.output.slice(-2500));
await gw.dispose(); await model.stop(); await nats.stop();
