/** What every mesh component shares about one connection: handles, names, limits, config. */
import type { NatsConnection } from "@nats-io/transport-node";
import type { JetStreamClient, JetStreamManager } from "@nats-io/jetstream";
import type { MeshConfig } from "./config.js";
import type { Logger } from "./log.js";
import type { Names, ServerFeatures } from "./topology/index.js";
import type { JetStreamIngest } from "./transport/ingest.js";
import type { ChannelPolicy } from "./handoff/index.js";

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
  /** Which chats announce overrides may target. */
  readonly channelPolicy: ChannelPolicy;
}
