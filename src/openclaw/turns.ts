/** A turn's end closes the session's run: the lease is released and the registry records how it went. */
import type { PluginConfig } from "./config.js";
import type { PluginApi } from "./host-types.js";
import type { MeshRuntime } from "./runtime.js";

export function install(api: PluginApi, runtime: MeshRuntime, _config: PluginConfig): void {
  api.on("agent_end", async (event, ctx) => {
    if (!ctx.sessionKey) return;
    const outcome = event.success ? "ok" : event.error ? "error" : "interrupted";
    await runtime.endRun(ctx.sessionKey, { outcome, ...(event.error && { error: event.error }) }).catch(() => undefined);
  });
}
