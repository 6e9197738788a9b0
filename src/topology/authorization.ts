/**
 * Broker-enforced identity: nats-server `authorization` for a set of instances (one credential
 * holder per gateway), generated from a small spec. What each instance may do is spelled out by
 * subject, so the server itself refuses an instance that reads another's inbox (by consumer, direct
 * get or message get), touches another's consumers, writes another's registry entries, or sends
 * with another's identity. Every instance uses its own inbox prefix (`_INBOX_<instance>`) so no one
 * can subscribe to another's replies and pull deliveries.
 */
import { z } from "zod";
import { Names } from "./names.js";

export const AuthSpecSchema = z.object({
  prefix: z.string().default("mesh"),
  instances: z.record(z.string().regex(/^[a-z0-9][a-z0-9_-]{0,63}$/), z.object({ password: z.string().min(8) })),
  /** An operator credential with full access (provisioning, redrive, janitor across instances). */
  operator: z.object({ user: z.string().min(1), password: z.string().min(8) }).optional(),
  /**
   * JetStream limits of the mesh's account (all its users together). Defaults scale with the
   * number of instances: what each instance's streams may store on disk, its session consumers,
   * and room for the shared buckets.
   */
  jetstream: z
    .object({
      maxFileBytes: z.number().int().positive().optional(),
      maxMemoryBytes: z.number().int().nonnegative().optional(),
      maxStreams: z.number().int().positive().optional(),
      maxConsumers: z.number().int().positive().optional(),
    })
    .default({}),
});
export type AuthSpec = z.input<typeof AuthSpecSchema>;

export function inboxPrefixFor(instance: string): string {
  return `_INBOX_${instance}`;
}

export interface InstancePermissions {
  readonly publish: string[];
  readonly subscribe: string[];
}

/**
 * Subjects instance `me` may publish and subscribe to. No instance may create, reconfigure, delete
 * or purge a stream or bucket (provisioning is the operator's), create consumers on the shared
 * buckets (but one feed of the tasks it requested), read the content of tasks it takes no part in, or answer a request on anyone's behalf: `allow_responses` is off, and the only replies
 * it may publish go to its own inbox prefix (its lease-liveness answers to its own processes).
 */
export function instancePermissions(prefix: string, me: string): InstancePermissions {
  const n = new Names(prefix);
  const own = [n.inboxStream(me), n.parkedStream(me), n.seenStream(me), `KV_${n.leaseBucket(me)}`];
  // Registries whose records hold no content: readable by every instance (a session is addressed by them).
  const shared = [n.sessionBucket(), n.directoryBucket(), n.watchBucket(), n.taskKeyBucket()].map((b) => `KV_${b}`);
  const tasks = `KV_${n.taskBucket()}`;
  const api = "$JS.API";
  const publish = [
    // Sending: only as itself (token 3 of an inbox subject is the sender).
    `${prefix}.in.*.${me}.>`,
    `${prefix}.parked.${me}.>`,
    `${prefix}.seen.${me}.>`,
    // Liveness probes and their answers: its own processes only.
    `${prefix}.alive.${me}.*`,
    `${inboxPrefixFor(me)}.>`,
    `${api}.INFO`,
    `${api}.STREAM.NAMES`,
    // Its own streams: reading, its sessions' consumers, acks; no create, update, delete or purge.
    ...own.flatMap((s) => [
      `${api}.STREAM.INFO.${s}`,
      `${api}.STREAM.MSG.GET.${s}`,
      `${api}.STREAM.MSG.DELETE.${s}`,
      `${api}.DIRECT.GET.${s}`,
      `${api}.DIRECT.GET.${s}.>`,
      `${api}.CONSUMER.CREATE.${s}`,
      `${api}.CONSUMER.CREATE.${s}.>`,
      `${api}.CONSUMER.DURABLE.CREATE.${s}.>`,
      `${api}.CONSUMER.INFO.${s}.>`,
      `${api}.CONSUMER.DELETE.${s}.>`,
      `${api}.CONSUMER.MSG.NEXT.${s}.>`,
      `$JS.ACK.${s}.>`,
    ]),
    // Its seen log drops the records a snapshot of several parts made obsolete (the rollup a
    // one-part snapshot carries removes as much).
    `${api}.STREAM.PURGE.${n.seenStream(me)}`,
    `$KV.${n.leaseBucket(me)}.>`,
    // Shared registries: read by info and direct get (no consumers); written only where the key names this instance.
    ...shared.flatMap((s) => [`${api}.STREAM.INFO.${s}`, `${api}.STREAM.MSG.GET.${s}`, `${api}.DIRECT.GET.${s}`, `${api}.DIRECT.GET.${s}.>`]),
    // Task records hold request titles and results: read only by a direct get whose API subject
    // names a key of a task this instance takes part in (no message get, no get by sequence). Key
    // names are listed to all (stream info).
    `${api}.STREAM.INFO.${tasks}`,
    ...n.readableTaskKeys(me).map((k) => `${api}.DIRECT.GET.${tasks}.${k}`),
    // A live feed of the tasks it requested (an awaiting requester learns of a decision from the
    // decision's write): a consumer created through the API subject that names its filter, which
    // the server holds the consumer's filter to, delivering under its own inbox prefix only.
    `${api}.CONSUMER.CREATE.${tasks}.*.$KV.${n.taskBucket()}.${n.tasksRequestedBy(me)}`,
    ...n.writableRegistryKeys(me),
  ];
  // Replies and pull deliveries only under its own inbox prefix; liveness probes for its own holders.
  // Writes to its own lease keys, which a contender for a busy session waits on.
  const subscribe = [`${inboxPrefixFor(me)}.>`, `${prefix}.alive.${me}.*`, `$KV.${n.leaseBucket(me)}.>`];
  return { publish, subscribe };
}

const q = (s: string) => JSON.stringify(s);

const GiB = 1024 ** 3;
/** Streams each instance has: inbox, parked, seen, leases. */
const STREAMS_PER_INSTANCE = 4;
/** The shared buckets: tasks, sessions, directory, watches, task keys. */
const SHARED_STREAMS = 5;

/** The account's JetStream limits for a spec: given values, or defaults scaled by the instances. */
export function accountLimits(spec: z.output<typeof AuthSpecSchema>): { maxFileBytes: number; maxMemoryBytes: number; maxStreams: number; maxConsumers: number } {
  const n = Object.keys(spec.instances).length;
  return {
    maxFileBytes: spec.jetstream.maxFileBytes ?? (n + 1) * GiB,
    maxMemoryBytes: spec.jetstream.maxMemoryBytes ?? 256 * 1024 ** 2,
    // Room for the operator's own tools beside the mesh's streams.
    maxStreams: spec.jetstream.maxStreams ?? n * STREAMS_PER_INSTANCE + SHARED_STREAMS + 8,
    // Session consumers are reaped when idle; this bounds what a runaway instance can hold.
    maxConsumers: spec.jetstream.maxConsumers ?? n * 10_000,
  };
}

/**
 * A nats-server configuration block for the spec: one account holding one user per instance (and
 * the operator), with JetStream limits for the account, so no user can grow the server's store
 * without bound. Include it in a server configuration that enables JetStream.
 */
export function generateAuthorization(specInput: AuthSpec): string {
  const spec = AuthSpecSchema.parse(specInput);
  const users = Object.entries(spec.instances).map(([instance, { password }]) => {
    const p = instancePermissions(spec.prefix, instance);
    return [
      "      {",
      `        user: ${q(instance)}`,
      `        password: ${q(password)}`,
      "        permissions: {",
      `          publish: { allow: [${p.publish.map(q).join(", ")}] }`,
      `          subscribe: { allow: [${p.subscribe.map(q).join(", ")}] }`,
      "        }",
      "      }",
    ].join("\n");
  });
  if (spec.operator) users.push(`      { user: ${q(spec.operator.user)}, password: ${q(spec.operator.password)} }`);
  const l = accountLimits(spec);
  return [
    "# Generated by clawmesh from an authorization spec: one user per instance, in one account with JetStream limits.",
    "accounts {",
    `  ${spec.prefix}: {`,
    `    jetstream: { max_file: ${l.maxFileBytes}, max_mem: ${l.maxMemoryBytes}, max_streams: ${l.maxStreams}, max_consumers: ${l.maxConsumers} }`,
    "    users: [",
    ...users,
    "    ]",
    "  }",
    "}",
    "",
  ].join("\n");
}
