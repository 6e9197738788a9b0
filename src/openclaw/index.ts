/**
 * `clawmesh/openclaw`: the OpenClaw plugin's parts for hosts and tests that wire it themselves.
 * OpenClaw itself loads the plugin entry (`openclaw.extensions`, dist/openclaw/plugin.js).
 */
export { PLUGIN_ID, registerClawmesh } from "./register.js";
export { takePending } from "./surfacing.js";
export { SurfacedBlocks } from "./surfaced-blocks.js";
export { PluginConfigSchema, pluginConfigJsonSchema, type PluginConfig } from "./config.js";
export { MeshRuntime, MeshUnavailableError, MeshMisconfiguredError } from "./runtime.js";
export type { PluginApi, HostTool, ToolFactoryContext, HookHandlers } from "./host-types.js";
