/**
 * Legacy skip tokens (`REPLY_SKIP`, `ANNOUNCE_SKIP`, `NO_REPLY`, in any case) kept out of channels:
 * a signalling token is stripped (a skip cancels the message), a struck-through one removed, a
 * mention inside prose quoted as code. A channel never shows a bare token.
 */
import { classifyReply, rewritten } from "../handoff/index.js";
import type { PluginConfig } from "./config.js";
import type { PluginApi } from "./host-types.js";
import type { MeshRuntime } from "./runtime.js";

export function install(api: PluginApi, _runtime: MeshRuntime, _config: PluginConfig): void {
  api.on("message_sending", (event) => {
    const c = classifyReply(event.content ?? "");
    if (!rewritten(c)) return undefined;
    if (c.skip || c.text.length === 0) return { cancel: true };
    return { content: c.text };
  });
}
