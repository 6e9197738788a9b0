/**
 * Idempotent provisioning of one instance's streams and buckets. Creating what is missing is safe
 * to repeat; an existing resource whose configuration disagrees with the mesh's is an error naming
 * the field, never silently "fixed" (changing retention under live data is an operator decision).
 */
import { nanos } from "@nats-io/transport-node";
import {
  DiscardPolicy,
  RetentionPolicy,
  StorageType,
  type JetStreamManager,
  type StreamConfig,
} from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { TopologyConflictError } from "../errors.js";
import type { Retention } from "../config.js";
import type { Names } from "./names.js";
import type { ServerFeatures } from "./features.js";
import { isNotFound, isPermissionDenied } from "../transport/js-errors.js";
import { MeshError } from "../errors.js";

/** A stream or bucket that does not exist and that this credential may not create. */
export class NotProvisionedError extends MeshError {
  readonly resource: string;
  constructor(resource: string, cause: unknown) {
    super("not_provisioned", `${resource} does not exist and this credential may not create it: provisioning is an operator action (clawmesh provision <instance> with the operator credential)`, { cause });
    this.resource = resource;
  }
}

/** Compared on an existing stream: the fields that decide what is kept and for how long. */
const CHECKED_FIELDS = ["subjects", "retention", "storage", "discard", "max_age", "max_bytes", "max_msgs", "max_msgs_per_subject", "duplicate_window", "num_replicas", "max_msg_size", "allow_rollup_hdrs", "deny_delete", "deny_purge"] as const;

/** A stream's size limits for this server: the count cap always, the byte cap only where it is exact. */
function limits(features: ServerFeatures, maxMessages: number, maxBytes: number): Pick<StreamConfig, "max_msgs" | "max_bytes"> {
  return { max_msgs: maxMessages, max_bytes: features.supports("exactByteLimit") ? maxBytes : -1 };
}

export interface InstanceTopology {
  readonly inboxStream: string;
  readonly parkedStream: string;
  readonly seenStream: string;
  readonly leaseBucket: string;
}

export function inboxStreamConfig(names: Names, features: ServerFeatures, instance: string, r: Retention, maxMessageBytes: number): Partial<StreamConfig> & { name: string } {
  return {
    name: names.inboxStream(instance),
    description: `clawmesh session inboxes of instance ${instance}`,
    subjects: [names.inboxWildcard(instance)],
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    discard: DiscardPolicy.New,
    max_age: nanos(r.maxAgeMs),
    ...limits(features, r.maxMessages, r.maxBytes),
    max_msg_size: maxMessageBytes,
    duplicate_window: nanos(r.duplicateWindowMs),
    num_replicas: r.replicas,
    allow_direct: true,
  };
}

/** The parked and seen streams: same shape as an inbox, their own subjects and age. */
function sideStreamConfig(name: string, subject: string, purpose: string, maxAgeMs: number, caps: Pick<StreamConfig, "max_msgs" | "max_bytes">, r: Retention, rollups = false): Partial<StreamConfig> & { name: string } {
  return {
    name,
    description: `clawmesh ${purpose}`,
    subjects: [subject],
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    discard: DiscardPolicy.New,
    max_age: nanos(maxAgeMs),
    ...caps,
    duplicate_window: nanos(r.duplicateWindowMs),
    num_replicas: r.replicas,
    allow_direct: true,
    // The seen log compacts itself with subject rollups; nothing else may roll up.
    allow_rollup_hdrs: rollups,
  };
}

export async function ensureStream(jsm: JetStreamManager, want: Partial<StreamConfig> & { name: string }): Promise<void> {
  let existing: StreamConfig | undefined;
  try {
    existing = (await jsm.streams.info(want.name)).config;
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
  // Another process may be creating it at the same moment (the server then says "name in use", or,
  // mid-creation, "subjects overlap"): look again, and compare with what is there.
  for (let attempt = 1; existing === undefined; attempt++) {
    try {
      await jsm.streams.add(want);
      return;
    } catch (err) {
      if (isPermissionDenied(err)) throw new NotProvisionedError(want.name, err);
      existing = await jsm.streams.info(want.name).then(
        (i) => i.config,
        (e: unknown) => {
          if (!isNotFound(e) || attempt >= 3) throw isNotFound(e) ? err : e;
          return undefined;
        },
      );
    }
  }
  for (const field of CHECKED_FIELDS) {
    if (!(field in want)) continue;
    const a = existing[field as keyof StreamConfig];
    const w = want[field as keyof StreamConfig];
    if (JSON.stringify(a) !== JSON.stringify(w)) throw new TopologyConflictError(`stream ${want.name}`, field, a, w);
  }
}

export async function provisionInstance(
  nc: NatsConnection,
  jsm: JetStreamManager,
  names: Names,
  features: ServerFeatures,
  instance: string,
  retention: Retention,
  maxMessageBytes: number,
): Promise<InstanceTopology> {
  await ensureStream(jsm, inboxStreamConfig(names, features, instance, retention, maxMessageBytes));
  await ensureStream(
    jsm,
    sideStreamConfig(names.parkedStream(instance), names.parkedWildcard(instance), `parked (undeliverable) messages of instance ${instance}`, retention.parkedMaxAgeMs, limits(features, retention.parkedMaxMessages, retention.parkedMaxBytes), retention),
  );
  await ensureStream(
    jsm,
    sideStreamConfig(names.seenStream(instance), names.seenWildcard(instance), `record of surfaced envelope ids of instance ${instance}`, retention.seenMaxAgeMs, limits(features, retention.seenMaxMessages, retention.seenMaxBytes), retention, true),
  );
  const leaseBucket = names.leaseBucket(instance);
  // Leases of sessions nobody reads any more age out with the bucket's max_age.
  await ensureBucket(nc, jsm, leaseBucket, { ttlMs: 24 * 60 * 60 * 1000, replicas: retention.replicas, description: `clawmesh session reader leases of instance ${instance}` });
  return {
    inboxStream: names.inboxStream(instance),
    parkedStream: names.parkedStream(instance),
    seenStream: names.seenStream(instance),
    leaseBucket,
  };
}

/**
 * The stream behind a KV bucket (history 1, file storage), as the KV client lays it out, but with
 * rollup headers refused: a `Nats-Rollup: all` published on any key a client may write would
 * otherwise purge every other key of the bucket. The mesh never purges keys (it deletes with a
 * marker), and nobody may purge or delete the bucket's messages through the stream API.
 */
export function bucketStreamConfig(name: string, opts: { ttlMs: number; replicas: number; description: string }): Partial<StreamConfig> & { name: string } {
  return {
    name: `KV_${name}`,
    description: opts.description,
    subjects: [`$KV.${name}.>`],
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    discard: DiscardPolicy.New,
    max_msgs_per_subject: 1,
    max_age: nanos(opts.ttlMs),
    num_replicas: opts.replicas,
    allow_direct: true,
    allow_rollup_hdrs: false,
    deny_delete: true,
    deny_purge: true,
  };
}

/** Create a KV bucket if it does not exist; an existing one must match (see `ensureStream`). */
export async function ensureBucket(
  _nc: NatsConnection,
  jsm: JetStreamManager,
  name: string,
  opts: { ttlMs: number; replicas: number; description: string },
): Promise<void> {
  await ensureStream(jsm, bucketStreamConfig(name, opts));
}
