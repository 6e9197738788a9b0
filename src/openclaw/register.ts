/**
 * Wiring clawmesh into an OpenClaw gateway: one shared runtime (the NATS connection and the open
 * runs) and one module per concern, each installing its own tools or hooks on it.
 */
import { parseInput } from "../config.js";
import { PluginConfigSchema, type PluginConfig } from "./config.js";
import type { PluginApi } from "./host-types.js";
import { MeshRuntime } from "./runtime.js";
import * as tools from "./tools.js";
import * as surfacing from "./surfacing.js";
import * as spawn from "./spawn.js";
import * as sendRouting from "./send-routing.js";
import * as turns from "./turns.js";
import * as outboundTokens from "./outbound-tokens.js";
import * as wake from "./wake.js";

export const PLUGIN_ID = "clawmesh";

/**
 * The parts that hook into agent runs. Two of them gate `before_tool_call`, each for its own tool
 * (spawn: sessions_spawn, send-routing: sessions_send). OpenClaw runs a hook's handlers one after
 * another: a block ends the chain, and every handler sees the original params (the last returned
 * params win). Since no tool is looked at by both, their results never meet and the order here is
 * only the order of registration.
 */
const HOOK_PARTS = [surfacing, spawn, sendRouting, turns, outboundTokens, wake];

/**
 * OpenClaw calls register() for several registries in one gateway process (discovery, full, per
 * agent run). They must all share one connection and one table of open runs, or two of them would
 * contend for the same session's lease.
 */
const RUNTIMES = Symbol.for("clawmesh.openclaw.runtimes");
function sharedRuntime(config: PluginConfig, api: PluginApi): MeshRuntime {
  const g = globalThis as { [RUNTIMES]?: Map<string, MeshRuntime> };
  const table = (g[RUNTIMES] ??= new Map());
  const key = JSON.stringify(config);
  let runtime = table.get(key);
  if (!runtime || runtime.stopped) {
    runtime = new MeshRuntime(config, api.logger);
    table.set(key, runtime);
  }
  return runtime;
}

export function registerClawmesh(api: PluginApi): MeshRuntime | undefined {
  const config: PluginConfig = parseInput(PluginConfigSchema, api.pluginConfig ?? {}, "clawmesh plugin config");
  const runtime = sharedRuntime(config, api);
  const mode = api.registrationMode ?? "full";

  tools.install(api, runtime, config);

  // Seen on openclaw 2026.9.6: agent runs dispatch hooks from the registry of a later
  // "discovery" load in the same process, so hooks go into every runtime registry. They open
  // nothing when registered; the one connection per process is the shared runtime's.
  const hooksWanted = mode === "full" || mode === "discovery" || mode === "tool-discovery";
  if (!hooksWanted) return undefined;

  if (mode === "full") {
    api.registerService({
      id: PLUGIN_ID,
      start: () => runtime.start(),
      stop: () => runtime.stop(),
    });
  }
  for (const part of HOOK_PARTS) part.install(api, runtime, config);
  api.on("gateway_stop", async () => {
    await runtime.stop();
  });
  return runtime;
}
