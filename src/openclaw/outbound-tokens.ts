/**
 * Legacy skip tokens (`REPLY_SKIP`, `ANNOUNCE_SKIP`, `NO_REPLY`) kept out of channels: stripped from
 * outbound text, and a reply that was only a skip is not sent at all.
 */
import { classifyReply } from "../handoff/index.js";
import type { PluginConfig } from "./config.js";
import type { PluginApi } from "./host-types.js";
import type { MeshRuntime } from "./runtime.js";

export function install(api: PluginApi, _runtime: MeshRuntime, _config: PluginConfig): void {
  api.on("message_sending", (event) => {
    const c = classifyReply(event.content ?? "");
    if (c.tokens.length === 0) return undefined;
    if (c.skip || c.text.length === 0) return { cancel: true };
    return { content: c.text };
  });
}
