/**
 * Wake on delivery, wired into the gateway: each registration offers its api (and so its
 * `runtime.system`) to the runtime's seam (wake-seam.ts); the runtime follows this instance's
 * arrivals once connected and hands them to its Waker (waker.ts).
 */
import type { PluginConfig } from "./config.js";
import type { PluginApi } from "./host-types.js";
import type { MeshRuntime } from "./runtime.js";

export function install(api: PluginApi, runtime: MeshRuntime, _config: PluginConfig): void {
  runtime.wakeSeam.offer(api);
}
