/**
 * The mesh client: one per gateway instance (one NATS connection). A small facade in the manner of
 * Temporal's `Client`: `send` at the top, and one sub-client per concern:
 *
 * - `mesh.sessions`: open a session's run (`open`) or inbox, list the session registry;
 * - `mesh.tasks`: finish tasks from outside a run, child sessions, task keys, recovery;
 * - `mesh.channels`: the channel directory;
 * - `mesh.parked`: undeliverable messages and redrive;
 * - `mesh.admin`: provisioning and the janitor.
 */
import { connect, type ConnectionOptions, type NatsConnection, type Status } from "@nats-io/transport-node";
import { z } from "zod";
import { assertInstanceId, type SessionAddress } from "./address/index.js";
import { MeshConfigSchema, parseInput, type MeshConfig, type MeshConfigInput, type ReconnectPolicy } from "./config.js";
import type { Logger } from "./log.js";
import { createMeshContext } from "./mesh-context.js";
import { ENVELOPE_ID_RE, Kinds, createEnvelope, isPlainJson } from "./wire/index.js";
import { loadDedupSecret, sendEnvelope, type Delivered } from "./inbox/index.js";
import { connectionOptionsFor, type MeshAuth } from "./transport/credentials.js";
import { MeshCore, type SessionRef } from "./client/core.js";
import { SessionsClient } from "./client/sessions.js";
import { TasksClient } from "./client/tasks.js";
import { ChannelsClient } from "./client/channels.js";
import { ParkedClient } from "./client/parked.js";
import { AdminClient } from "./client/admin.js";

export type { SessionRef } from "./client/core.js";

export interface MeshConnectOptions extends MeshConfigInput {
  /** NATS servers, e.g. "nats://127.0.0.1:4222". */
  readonly servers?: string | string[];
  /**
   * Credentials, TLS and the inbox prefix, validated (user/password, token, nkey seed file, creds
   * file; TLS CA, certificate, key). The inbox prefix defaults to `_INBOX_<instance>`.
   */
  readonly auth?: MeshAuth;
  /**
   * Extra NATS connection options (name, timeouts...), which override what `auth` derives.
   * Reconnection follows `reconnect`
   * (default: never give up, 250 ms between attempts); `maxReconnectAttempts`,
   * `reconnectTimeWait` or `reconnectJitter` given here override it.
   */
  readonly connection?: Omit<ConnectionOptions, "servers">;
  readonly logger?: Logger;
  /** Create this instance's streams and buckets if missing (default true). */
  readonly provision?: boolean;
  /** Run the janitor in this process (default false: for long-lived hosts, not one-shot calls). */
  readonly janitor?: boolean;
}

const SendInputSchema = z.object({
  from: z.custom<SessionRef>((v) => v !== undefined && v !== null, "from: a session key or address is required"),
  to: z.custom<SessionRef>((v) => v !== undefined && v !== null, "to: a session key or address is required"),
  kind: z.string().optional(),
  body: z.json(),
  id: z.string().regex(ENVELOPE_ID_RE, "1-64 of A-Z a-z 0-9 _ -").optional(),
  correlationId: z.string().min(1).max(128).optional(),
  taskId: z.string().min(1).max(128).optional(),
});
export type SendInput = z.input<typeof SendInputSchema>;
type SendRequest = z.output<typeof SendInputSchema>;

const optionalText = (v: unknown, max: number) => v === undefined || (typeof v === "string" && v.length >= 1 && v.length <= max);

/**
 * The send input, checked without zod when it is the common well-typed shape (zod's JSON walk of
 * the body cost as much CPU per send as the publish); anything else goes through the schema, which
 * decides and words the error. Same acceptance: the fast check only says yes to what the schema
 * accepts (it reads only the schema's fields, as the schema's output would carry).
 */
function sendRequest(input: SendInput): SendRequest {
  const i = input as Partial<Record<keyof SendInput, unknown>> | null;
  const fast =
    typeof i === "object" &&
    i !== null &&
    i.from !== undefined &&
    i.from !== null &&
    i.to !== undefined &&
    i.to !== null &&
    (i.kind === undefined || typeof i.kind === "string") &&
    (i.id === undefined || (typeof i.id === "string" && ENVELOPE_ID_RE.test(i.id))) &&
    optionalText(i.correlationId, 128) &&
    optionalText(i.taskId, 128) &&
    isPlainJson(i.body);
  return fast ? (input as SendRequest) : parseInput(SendInputSchema, input, "send");
}

export type SendResult = Delivered;

export class Mesh {
  readonly #core: MeshCore;
  readonly #ownsConnection: boolean;
  readonly sessions: SessionsClient;
  readonly tasks: TasksClient;
  readonly channels: ChannelsClient;
  readonly parked: ParkedClient;
  readonly admin: AdminClient;

  private constructor(core: MeshCore, ownsConnection: boolean) {
    this.#core = core;
    this.#ownsConnection = ownsConnection;
    this.sessions = new SessionsClient(core);
    this.tasks = new TasksClient(core);
    this.channels = new ChannelsClient(core);
    this.parked = new ParkedClient(core);
    this.admin = new AdminClient(core);
  }

  static async connect(opts: MeshConnectOptions): Promise<Mesh> {
    const config = parseInput(MeshConfigSchema, opts, "mesh configuration");
    const nc = await connect({
      ...reconnectOptions(config.reconnect),
      ...connectionOptionsFor(opts.auth, config.instance),
      ...opts.connection,
      servers: opts.servers ?? "nats://127.0.0.1:4222",
      noAsyncTraces: true,
    });
    try {
      return await Mesh.build(nc, config, opts, true);
    } catch (err) {
      await nc.close();
      throw err;
    }
  }

  /**
   * Use a connection the caller owns (it is not closed by `close()`). How it reconnects is the
   * caller's choice (the `reconnect` setting applies to `connect` only); live waits resume on
   * its reconnect events all the same.
   */
  static async attach(nc: NatsConnection, opts: Omit<MeshConnectOptions, "servers" | "connection">): Promise<Mesh> {
    const config = parseInput(MeshConfigSchema, opts, "mesh configuration");
    return Mesh.build(nc, config, opts, false);
  }

  private static async build(nc: NatsConnection, config: MeshConfig, opts: MeshConnectOptions, owns: boolean): Promise<Mesh> {
    assertInstanceId(config.instance);
    // The reply prefix this connection really uses (also for a caller's own connection).
    const inboxPrefix = (nc as { options?: { inboxPrefix?: string } }).options?.inboxPrefix;
    const ctx = await createMeshContext(nc, config, { ...(opts.logger && { logger: opts.logger }), ...(inboxPrefix !== undefined && { inboxPrefix }) });
    const mesh = new Mesh(new MeshCore(ctx), owns);
    if (opts.provision !== false) await mesh.admin.provision();
    // Before anything is published: the instance's key for publish dedup ids.
    await loadDedupSecret(ctx);
    if (opts.provision !== false) {
      // Finish any completion a crash left half-written (decided in the registry, event unsent):
      // in the background, task by task, so connecting never waits for (or fails on) a requester.
      mesh.#core.notifier.startRecovery();
    }
    if (opts.janitor === true) await mesh.admin.startJanitor();
    return mesh;
  }

  get instance(): string {
    return this.#core.instance;
  }

  /** The connected server's version. */
  get serverVersion(): string {
    return this.#core.ctx.features.version;
  }

  /** True once the connection is closed for good (not while it is reconnecting). */
  get isClosed(): boolean {
    return this.#core.ctx.nc.isClosed();
  }

  /** The connection's status events (disconnect, reconnect, ...). */
  status(): AsyncIterable<Status> {
    return this.#core.ctx.nc.status();
  }

  /** Resolve a session reference to an address; bare keys belong to this instance. */
  address(ref: SessionRef): SessionAddress {
    return this.#core.address(ref);
  }

  /**
   * Store a message in the recipient session's durable inbox. Resolves once the server has
   * acknowledged the write; never waits for the recipient. Throws PayloadTooLargeError before
   * publishing an oversize message and SendFailedError (with the envelope id, for a safe retry)
   * when the server did not acknowledge.
   */
  async send(input: SendInput): Promise<SendResult> {
    const req = sendRequest(input);
    return sendEnvelope(
      this.#core.ctx,
      createEnvelope({
        kind: req.kind ?? Kinds.message,
        from: this.#core.address(req.from),
        to: this.#core.address(req.to),
        body: req.body,
        ...(req.id !== undefined && { id: req.id }),
        ...(req.correlationId !== undefined && { correlationId: req.correlationId }),
        ...(req.taskId !== undefined && { taskId: req.taskId }),
      }),
    );
  }

  async close(): Promise<void> {
    await this.admin.stop();
    await this.#core.notifier.stop();
    await this.#core.closeServices();
    this.#core.ctx.ingest.close();
    this.#core.ctx.connection.close();
    if (this.#ownsConnection) await this.#core.ctx.nc.close();
  }
}

/** The client's reconnect options for a mesh reconnect policy. */
function reconnectOptions(r: ReconnectPolicy): Pick<ConnectionOptions, "reconnect" | "maxReconnectAttempts" | "reconnectTimeWait" | "reconnectJitter" | "reconnectJitterTLS"> {
  return { reconnect: true, maxReconnectAttempts: r.maxAttempts, reconnectTimeWait: r.timeWaitMs, reconnectJitter: r.jitterMs, reconnectJitterTLS: r.jitterMs };
}
