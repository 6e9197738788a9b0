/**
 * The OpenClaw plugin entry (`openclaw.extensions` in package.json). OpenClaw resolves
 * `openclaw/plugin-sdk/*` for the plugins it loads; the library itself never imports this file.
 */
import { definePluginEntry } from "openclaw/plugin-sdk/plugin-entry";
import { pluginConfigJsonSchema } from "./config.js";
import type { PluginApi } from "./host-types.js";
import { PLUGIN_ID, registerClawmesh } from "./register.js";

export default definePluginEntry({
  id: PLUGIN_ID,
  name: "clawmesh",
  description: "Durable, addressable messaging between agent sessions across gateways (NATS JetStream)",
  configSchema: pluginConfigJsonSchema(),
  register(api: PluginApi) {
    registerClawmesh(api);
  },
});
