/**
 * The mesh client: one per gateway instance (one NATS connection). It sends envelopes to session
 * inboxes, opens inboxes for reading, and exposes the parked-message view.
 */
import { randomUUID } from "node:crypto";
import { connect, type ConnectionOptions, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { z } from "zod";
import { assertInstanceId, parseSessionKey, sessionKeyOf, type SessionAddress } from "./address/index.js";
import { MeshConfigSchema, parseInput, type MeshConfig, type MeshConfigInput } from "./config.js";
import { InvalidAddressError } from "./errors.js";
import { createLogger, type Logger } from "./log.js";
import type { MeshContext } from "./mesh-context.js";
import { Names, ServerFeatures, provisionInstance } from "./topology/index.js";
import { ENVELOPE_ID_RE, Kinds, type Envelope } from "./wire/index.js";
import { Inbox, SessionWatcher, deliverWithRetry, listParked, redriveParked, type Delivered, type InboxOptions, type ParkedMessage } from "./inbox/index.js";
import { TaskRegistry, ensureTaskBucket, finishAsAssignee, finishTask, recoverTasks, type FinishHooks, type FinishOutcome, type FinishState } from "./tasks/index.js";
import { MeshSession, childTaskId, taskKeyEntryKey, type MeshServices } from "./session/index.js";
import { Directory, Janitor, SessionRegistry, Watches, ensureDirectoryBucket, ensureSessionBucket, ensureWatchBucket, type SessionFilter } from "./registry/index.js";
import { TypedBucket, ensureBucket } from "./topology/index.js";
import { TaskKeyEntrySchema, type SessionRecord, type TurnOutcome } from "./wire/index.js";
import { JetStreamIngest } from "./transport/ingest.js";
import { loadChannelPolicy } from "./handoff/index.js";

/** Room left under the server's max_payload for headers and protocol framing. */
const HEADER_ALLOWANCE = 4096;

export interface MeshConnectOptions extends MeshConfigInput {
  /** NATS servers, e.g. "nats://127.0.0.1:4222". */
  readonly servers?: string | string[];
  /** Extra NATS connection options (credentials, TLS, name...). */
  readonly connection?: Omit<ConnectionOptions, "servers">;
  readonly logger?: Logger;
  /** Create this instance's streams and buckets if missing (default true). */
  readonly provision?: boolean;
}

/** A session named by key (on this mesh's instance unless `instance` is given) or by address. */
export type SessionRef = string | SessionAddress | { readonly sessionKey: string; readonly instance?: string };

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

export type SendResult = Delivered;

export class Mesh {
  readonly ctx: MeshContext;
  private readonly ownsConnection: boolean;
  private servicesHandle: Promise<MeshServices> | undefined;
  private janitor: Janitor | undefined;

  private constructor(ctx: MeshContext, ownsConnection: boolean) {
    this.ctx = ctx;
    this.ownsConnection = ownsConnection;
  }

  static async connect(opts: MeshConnectOptions): Promise<Mesh> {
    const config = parseInput(MeshConfigSchema, opts, "mesh configuration");
    const nc = await connect({ ...opts.connection, servers: opts.servers ?? "nats://127.0.0.1:4222", noAsyncTraces: true });
    try {
      return await Mesh.build(nc, config, opts, true);
    } catch (err) {
      await nc.close();
      throw err;
    }
  }

  /** Use a connection the caller owns (it is not closed by `close()`). */
  static async attach(nc: NatsConnection, opts: Omit<MeshConnectOptions, "servers" | "connection">): Promise<Mesh> {
    const config = parseInput(MeshConfigSchema, opts, "mesh configuration");
    return Mesh.build(nc, config, opts, false);
  }

  private static async build(nc: NatsConnection, config: MeshConfig, opts: MeshConnectOptions, owns: boolean): Promise<Mesh> {
    assertInstanceId(config.instance);
    const names = new Names(config.prefix);
    const serverMaxPayload = nc.info?.max_payload ?? 1024 * 1024;
    const messageLimit = Math.min(config.maxMessageBytes, serverMaxPayload - HEADER_ALLOWANCE);
    const ctx: MeshContext = {
      nc,
      js: jetstream(nc),
      jsm: await jetstreamManager(nc),
      names,
      config,
      features: new ServerFeatures(nc.info?.version ?? "0.0.0"),
      logger: opts.logger ?? createLogger(),
      messageLimit,
      serverMaxPayload,
      channelPolicy: loadChannelPolicy(config.channelPolicyFile),
      ingest: new JetStreamIngest(nc, { ...(opts.connection?.inboxPrefix !== undefined && { inboxPrefix: opts.connection.inboxPrefix }) }),
    };
    const mesh = new Mesh(ctx, owns);
    if (opts.provision !== false) {
      await mesh.provision(config.instance);
      // Finish any completion a crash left half-written (decided in the registry, event unsent).
      await mesh.recoverTasks();
      const services = await mesh.services();
      mesh.janitor = new Janitor(ctx, services.sessions);
      mesh.janitor.start(config.registry.janitorIntervalMs);
    }
    return mesh;
  }

  get instance(): string {
    return this.ctx.config.instance;
  }

  /** Create (idempotently) the streams and buckets of an instance. */
  async provision(instance: string = this.instance): Promise<void> {
    assertInstanceId(instance);
    await provisionInstance(this.ctx.nc, this.ctx.jsm, this.ctx.names, instance, this.ctx.config.retention, this.ctx.messageLimit);
    await ensureTaskBucket(this.ctx);
    await ensureSessionBucket(this.ctx);
    await ensureDirectoryBucket(this.ctx);
    await ensureWatchBucket(this.ctx);
    const r = this.ctx.config.retention;
    await ensureBucket(this.ctx.nc, this.ctx.jsm, this.ctx.names.taskKeyBucket(), { ttlMs: r.taskMaxAgeMs, replicas: r.replicas, description: "clawmesh task keys (idempotent spawn)" });
  }

  /** The shared registries (opened on first use). */
  services(): Promise<MeshServices> {
    this.servicesHandle ??= (async () => {
      const watches = await Watches.open(this.ctx);
      return {
        watches,
        tasks: await TaskRegistry.open(this.ctx, watches),
        sessions: await SessionRegistry.open(this.ctx, watches),
        directory: await Directory.open(this.ctx),
        taskKeys: await TypedBucket.open(this.ctx.nc, this.ctx.names.taskKeyBucket(), TaskKeyEntrySchema),
      };
    })();
    return this.servicesHandle;
  }

  /** The task registry. */
  async registry(): Promise<TaskRegistry> {
    return (await this.services()).tasks;
  }

  /** Sessions across all instances, newest activity first. */
  async listSessions(filter: SessionFilter = {}): Promise<SessionRecord[]> {
    return (await this.services()).sessions.list(filter);
  }

  /** Register that a session of this instance serves a channel address (e.g. discord:#product-chat). */
  async bindChannel(channel: string, session: SessionRef): Promise<void> {
    const address = this.address(session);
    if (address.instance !== this.instance) throw new InvalidAddressError(sessionKeyOf(address), `instance '${this.instance}' can only bind its own sessions`);
    const s = await this.services();
    const entry = await s.directory.bind(channel, address);
    await s.sessions.ensure(address);
    await s.sessions.bindChannel(address, entry.channel);
  }

  /** The one session serving a channel address (errors name the candidates when none or several do). */
  async resolveChannel(channel: string, filter: { agent?: string; instance?: string } = {}): Promise<SessionAddress> {
    return (await this.services()).directory.resolve(channel, filter);
  }

  /** Record a turn's outcome for a session of this instance (OpenClaw: done=ok, failed=error, timeout, killed=interrupted). */
  async recordTurn(session: SessionRef, outcome: TurnOutcome, error?: string): Promise<void> {
    await (await this.services()).sessions.turnEnded(this.address(session), outcome, error);
  }

  /** Close a session of this instance for good (fires "closed" watches). */
  async closeSession(session: SessionRef): Promise<void> {
    await (await this.services()).sessions.close(this.address(session));
  }

  /**
   * Start a session's run: takes its lease, opens its inbox and a live watcher. Hold it for the
   * run; `close()` at run end (what was not surfaced stays for the next run).
   */
  async openSession(session: SessionRef, opts: InboxOptions = {}): Promise<MeshSession> {
    const inbox = await this.openInbox(session, opts);
    try {
      const watcher = await SessionWatcher.start(this.ctx, inbox.session);
      const services = await this.services();
      await services.sessions.runStarted(inbox.session, inbox.holder);
      return new MeshSession(this.ctx, inbox, watcher, services);
    } catch (err) {
      await inbox.close();
      throw err;
    }
  }

  /**
   * Record that a child session started outside the mesh (e.g. by OpenClaw's sessions_spawn) works
   * for `parent`, so awaiting the child's key reports it as working.
   */
  async registerChildSession(input: { parent: SessionRef; child: SessionRef; title?: string }): Promise<string> {
    const parent = this.address(input.parent);
    const child = this.address(input.child);
    const taskId = childTaskId(child);
    const registry = await this.registry();
    if (await registry.get(taskId)) return taskId;
    const now = new Date().toISOString();
    await registry
      .create({ v: 1, taskId, requester: parent, assignee: child, state: "working", ...(input.title && { title: input.title.slice(0, 500) }), createdAt: now, updatedAt: now, notified: false, childSession: true })
      .catch((err: unknown) => {
        if (!/key exists|wrong last sequence/i.test(String(err))) throw err;
      });
    return taskId;
  }

  /**
   * Publish the end of a child session started outside the mesh: its result lands in the parent's
   * inbox as a task.complete and resolves awaits on the child's session key.
   */
  async finishChildSession(input: { parent: SessionRef; child: SessionRef; state: FinishState; result?: Envelope["body"]; error?: string }): Promise<FinishOutcome> {
    const child = this.address(input.child);
    const taskId = await this.registerChildSession({ parent: input.parent, child });
    return finishTask(this.ctx, await this.registry(), {
      taskId,
      state: input.state,
      ...(input.result !== undefined && { result: input.result }),
      ...(input.error !== undefined && { error: input.error }),
      by: child,
    });
  }

  /**
   * Declare a task finished on behalf of its assignee session (no lease needed: the registry's
   * compare-and-set decides between concurrent writers).
   */
  async finishTask(
    input: { taskId: string; by: SessionRef; state: FinishState; result?: Envelope["body"]; error?: string },
    hooks?: FinishHooks,
  ): Promise<FinishOutcome> {
    const by = this.address(input.by);
    if (by.instance !== this.instance) throw new InvalidAddressError(sessionKeyOf(by), `instance '${this.instance}' cannot act for instance '${by.instance}'`);
    return finishAsAssignee(this.ctx, await this.registry(), { ...input, by }, hooks);
  }

  /**
   * The live session already working on a task key for an agent of this instance, if any (a
   * closed session does not count). Used to stop a host's own spawn from duplicating work.
   */
  async sessionForTaskKey(taskKey: string, agent: string): Promise<SessionAddress | undefined> {
    const s = await this.services();
    const entry = await s.taskKeys.get(taskKeyEntryKey({ taskKey, agent: agent.toLowerCase(), instance: this.instance }));
    if (!entry) return undefined;
    const session = parseSessionKey(entry.value.sessionKey, entry.value.instance);
    const record = await s.sessions.get(session);
    return record && !record.resumable ? undefined : session;
  }

  /** Record that `session` (e.g. a child a host spawned) works on `taskKey`; false if another live one already does. */
  async claimTaskKey(taskKey: string, session: SessionRef): Promise<boolean> {
    const address = this.address(session);
    const s = await this.services();
    const key = taskKeyEntryKey({ taskKey, agent: address.agent, instance: address.instance });
    const entry = { v: 1 as const, taskKey, sessionKey: sessionKeyOf(address), instance: address.instance, taskId: childTaskId(address), createdAt: new Date().toISOString() };
    if (await s.taskKeys.create(key, entry)) {
      await s.sessions.ensure(address, { taskKey });
      return true;
    }
    return (await this.sessionForTaskKey(taskKey, address.agent)) === undefined && (await s.taskKeys.update(key, () => entry)) !== undefined;
  }

  /** Republish completions of tasks assigned to this instance that a crash left unpublished. */
  async recoverTasks(): Promise<string[]> {
    return recoverTasks(this.ctx, await this.registry(), this.instance);
  }

  /** Resolve a session reference to an address; bare keys belong to this instance. */
  address(ref: SessionRef): SessionAddress {
    if (typeof ref === "string") return this.parseOwnKey(ref);
    if ("sessionKey" in ref) return parseSessionKey(ref.sessionKey, ref.instance ?? this.instance);
    // Re-derive from the key so hand-built addresses get the same validation and folding.
    return { ...parseSessionKey(sessionKeyOf(ref), ref.instance), ...(ref.run !== undefined && { run: ref.run }) };
  }

  /**
   * Store a message in the recipient session's durable inbox. Resolves once the server has
   * acknowledged the write; never waits for the recipient. Throws PayloadTooLargeError before
   * publishing an oversize message and SendFailedError (with the envelope id, for a safe retry)
   * when the server did not acknowledge.
   */
  async send(input: SendInput): Promise<SendResult> {
    const req = parseInput(SendInputSchema, input, "send");
    const from = this.address(req.from);
    if (from.instance !== this.instance) {
      throw new InvalidAddressError(sessionKeyOf(from), `a mesh client of instance '${this.instance}' cannot send as instance '${from.instance}'`);
    }
    const to = this.address(req.to);
    const envelope: Envelope = {
      v: 1,
      id: req.id ?? randomUUID(),
      kind: req.kind ?? Kinds.message,
      from,
      to,
      ...(req.correlationId !== undefined && { correlationId: req.correlationId }),
      ...(req.taskId !== undefined && { taskId: req.taskId }),
      body: req.body,
      sentAt: new Date().toISOString(),
    };
    return this.publishEnvelope(envelope);
  }

  private readonly keyCache = new Map<string, SessionAddress>();

  /** Keys of this instance repeat on every send: parse each once (bounded cache). */
  private parseOwnKey(key: string): SessionAddress {
    let a = this.keyCache.get(key);
    if (a === undefined) {
      a = parseSessionKey(key, this.instance);
      if (this.keyCache.size >= 4096) this.keyCache.clear();
      this.keyCache.set(key, a);
    }
    return a;
  }

  /** Publish a complete envelope (used by higher layers that build their own kinds). */
  async publishEnvelope(envelope: Envelope): Promise<SendResult> {
    return deliverWithRetry(this.ctx, envelope, this.ctx.config.sendRetryMs);
  }

  /** Open a session's inbox for reading (waits for the session's lease if another reader holds it). */
  async openInbox(session: SessionRef, opts: InboxOptions = {}): Promise<Inbox> {
    const address = this.address(session);
    if (address.instance !== this.instance) {
      throw new InvalidAddressError(sessionKeyOf(address), `instance '${this.instance}' can only read its own sessions`);
    }
    return Inbox.open(this.ctx, address, opts);
  }

  /** Parked messages of this instance (optionally of one session), oldest first. */
  async listParked(session?: SessionRef): Promise<ParkedMessage[]> {
    return listParked(this.ctx, this.instance, session === undefined ? undefined : this.address(session));
  }

  /** Put a parked message back into its session inbox. */
  async redriveParked(parkedSeq: number): Promise<{ subject: string; seq: number }> {
    return redriveParked(this.ctx, this.instance, parkedSeq);
  }

  async close(): Promise<void> {
    await this.janitor?.stop();
    this.ctx.ingest.close();
    if (this.ownsConnection) await this.ctx.nc.close();
  }
}
