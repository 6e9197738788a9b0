/** The plugin's configuration (`plugins.entries.clawmesh.config`): one zod schema, also the manifest's JSON Schema. */
import { z } from "zod";
import { MeshAuthSchema } from "../transport/credentials.js";
import { KIND_RE, Kinds } from "../wire/index.js";

/** What wakes an idle session by default: news it was waiting for, and anything addressed to it. */
export const DEFAULT_WAKE_KINDS: readonly string[] = [Kinds.taskComplete, Kinds.watchEvent, Kinds.reply, Kinds.message];

export const PluginConfigSchema = z
  .object({
    /** This gateway's instance id: part of every session address (`agent:main:main` exists in every gateway). */
    instance: z.string().regex(/^[a-z0-9][a-z0-9_-]{0,63}$/).describe("This gateway's instance id (a-z 0-9 _ -)"),
    servers: z.union([z.string(), z.array(z.string())]).optional().describe("NATS server URL(s); default nats://127.0.0.1:4222"),
    auth: MeshAuthSchema.optional().describe("How this gateway authenticates to NATS: user/password, token, nkeySeedFile or credsFile; TLS; inbox prefix (default _INBOX_<instance>)"),
    prefix: z.string().optional().describe("Subject prefix (default mesh)"),
    channelPolicyFile: z.string().optional().describe("JSON channel policy for announce overrides"),
    routeSessionsSend: z.boolean().optional().describe("Send built-in sessions_send calls through the mesh (default false)"),
    routeSessionsSpawn: z.boolean().optional().describe("Report sessions_spawn children's completions through the mesh instead of the native announce (default true)"),
    wakeOn: z
      .union([z.literal("off"), z.array(z.string().regex(KIND_RE, "a message kind: 1-4 dot-separated lowercase words")).min(1)])
      .optional()
      .describe('Message kinds that start a turn for a session of this gateway that is not running one (default ["task.complete", "watch.event", "reply", "msg"]); "off" never does'),
  })
  .strict();

export type PluginConfig = z.infer<typeof PluginConfigSchema>;

export function pluginConfigJsonSchema(): Record<string, unknown> {
  const { $schema: _s, ...schema } = z.toJSONSchema(PluginConfigSchema, { io: "input" }) as Record<string, unknown>;
  return schema;
}

/** The kinds that wake an idle session under `config` (empty: waking is off). */
export function wakeKinds(config: PluginConfig): ReadonlySet<string> {
  if (config.wakeOn === "off") return new Set();
  return new Set(config.wakeOn ?? DEFAULT_WAKE_KINDS);
}
