/** What every mesh component shares about one connection: handles, names, limits, config. */
import type { NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from "@nats-io/jetstream";
import type { MeshConfig } from "./config.js";
import { createLogger, type Logger } from "./log.js";
import { Names, ServerFeatures } from "./topology/index.js";
import { JetStreamIngest } from "./transport/ingest.js";
import { ConnectionState } from "./transport/connection.js";
import { loadChannelPolicy, type ChannelPolicy } from "./handoff/index.js";

/** Room left under the server's max_payload for headers and protocol framing. */
const HEADER_ALLOWANCE = 4096;

export interface MeshContext {
  readonly nc: NatsConnection;
  readonly js: JetStreamClient;
  readonly jsm: JetStreamManager;
  readonly names: Names;
  readonly config: MeshConfig;
  readonly features: ServerFeatures;
  readonly logger: Logger;
  /** Largest envelope accepted: the configured limit capped below the server's max_payload. */
  readonly messageLimit: number;
  readonly serverMaxPayload: number;
  /** Acknowledged publishing for envelopes (one shared reply subscription). */
  readonly ingest: JetStreamIngest;
  /** Whether the connection is up, and its drop / reconnect events. */
  readonly connection: ConnectionState;
  /** Which chats announce overrides may target. */
  readonly channelPolicy: ChannelPolicy;
  /** This connection's reply-subject prefix: the only place its liveness answers go. */
  readonly inboxPrefix: string;
  /** The instance's secret for publish dedup ids (see `publishDedupId`); set once the instance's bucket is readable. */
  readonly dedup: { secret?: string };
}

export async function createMeshContext(raw: NatsConnection, config: MeshConfig, opts: { logger?: Logger; inboxPrefix?: string } = {}): Promise<MeshContext> {
  const serverMaxPayload = raw.info?.max_payload ?? 1024 * 1024;
  const connection = new ConnectionState(raw);
  // Requests made while the connection is down wait for it instead of being silently dropped.
  const nc = connection.gate();
  const jsm = await jetstreamManager(nc);
  const ingest = new JetStreamIngest(nc, { ...(opts.inboxPrefix !== undefined && { inboxPrefix: opts.inboxPrefix }) });
  // Acknowledgements awaited across a drop never come: what was in flight went to the old
  // connection, and what was written while disconnected was discarded. Fail them at once; the
  // send path retries each under its envelope id.
  connection.onDisconnect(() => ingest.abandonInFlight());
  connection.onReconnect(() => ingest.abandonInFlight());
  return {
    nc,
    js: jetstream(nc),
    jsm,
    names: new Names(config.prefix),
    config,
    features: new ServerFeatures(nc.info?.version ?? "0.0.0"),
    logger: opts.logger ?? createLogger(),
    messageLimit: Math.min(config.maxMessageBytes, serverMaxPayload - HEADER_ALLOWANCE),
    serverMaxPayload,
    channelPolicy: loadChannelPolicy(config.channelPolicyFile),
    ingest,
    connection,
    inboxPrefix: opts.inboxPrefix ?? "_INBOX",
    dedup: {},
  };
}
