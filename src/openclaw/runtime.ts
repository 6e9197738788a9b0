/**
 * What the plugin holds inside one gateway process: one NATS connection (a Mesh), the open run of
 * every session that is mid-turn, and the children's completions still waiting to be published.
 * Tools and hooks reach the mesh through here (spawn.ts also asks it about task keys and children).
 */
import { Mesh } from "../mesh.js";
import { parseSessionKey, sessionKeyOf, type SessionAddress } from "../address/index.js";
import { MeshError, describe } from "../errors.js";
import type { Arrivals } from "../inbox/index.js";
import { isBusUnreachable, isNotPermitted } from "../transport/js-errors.js";
import type { MeshSession } from "../session/index.js";
import type { TurnOutcome } from "../wire/index.js";
import { wakeKinds, type PluginConfig } from "./config.js";
import type { HostLogger } from "./host-types.js";
import { PendingCompletions, type ChildCompletion } from "./pending-completions.js";
import { SurfacedBlocks } from "./surfaced-blocks.js";
import { firstWakingPending } from "./waking-pending.js";
import { HostWakeSeam, logNoSeam } from "./wake-seam.js";
import { Waker, type WakeTiming } from "./waker.js";

/** The connection to the bus is lost or cannot be made right now: passing, worth trying again. Used for nothing else. */
export class MeshUnavailableError extends MeshError {
  constructor(detail: string) {
    super("mesh_unavailable", `the clawmesh message bus is unreachable right now (${detail}). Nothing was sent; try again shortly or tell the user.`);
  }
}

/**
 * The bus refused this gateway (its credentials or permissions), or the mesh's configuration is
 * wrong (invalid settings, streams not provisioned or provisioned differently): a configuration
 * problem that waiting does not fix. Keeps the code of what refused (`not_permitted`,
 * `invalid_input`, `not_provisioned`, `topology_conflict`, ...).
 */
export class MeshMisconfiguredError extends MeshError {
  constructor(code: string, detail: string, options?: { cause?: unknown }) {
    super(code, `clawmesh cannot serve this gateway: ${detail}. This is a configuration or permission problem, not a passing failure: trying again will not help. Nothing was sent; tell the user or the operator.`, options);
  }
}

/** Connection trouble (worth retrying), or a configuration/authorization problem (not worth it). */
function connectFailure(err: unknown): MeshError {
  const detail = describe(err);
  if (isNotPermitted(err)) return new MeshMisconfiguredError("not_permitted", `the NATS server refused this gateway's credentials or permissions (${detail})`, { cause: err });
  if (err instanceof MeshError && !isBusUnreachable(err, { connected: false })) return new MeshMisconfiguredError(err.code, detail, { cause: err });
  return new MeshUnavailableError(detail);
}

export class MeshRuntime {
  private mesh: Mesh | undefined;
  private connecting: Promise<Mesh> | undefined;
  private lastError = "not connected yet";
  private readonly runs = new Map<string, Promise<MeshSession>>();
  /** Children's completions that could not be published yet; retried until they are. */
  readonly childCompletions: PendingCompletions;
  /** Blocks of pending messages shown to a turn and not yet confirmed, per session key. */
  readonly surfaced: SurfacedBlocks;
  /** How OpenClaw is asked for a turn (every registration offers its api). */
  readonly wakeSeam = new HostWakeSeam();
  /** Starts turns for idle sessions when something arrives for them; set while connected. */
  private waking: { readonly waker: Waker; readonly arrivals: Arrivals } | undefined;

  constructor(
    readonly config: PluginConfig,
    private readonly logger: HostLogger,
    /** Overrides for the waker's delays (tests). */
    private readonly wakeTiming: Partial<WakeTiming> = {},
  ) {
    this.surfaced = new SurfacedBlocks(logger);
    this.childCompletions = new PendingCompletions((c) => this.publishChildEnd(c), logger);
  }

  /** Connect (service start). A failure is logged clearly and retried on the next use. */
  async start(): Promise<void> {
    this.stopped = false;
    await this.connection().catch(() => undefined);
  }

  private connection(): Promise<Mesh> {
    if (this.mesh && !this.mesh.isClosed) return Promise.resolve(this.mesh);
    this.connecting ??= Mesh.connect({
      instance: this.config.instance,
      ...(this.config.servers !== undefined && { servers: this.config.servers }),
      ...(this.config.prefix !== undefined && { prefix: this.config.prefix }),
      ...(this.config.channelPolicyFile !== undefined && { channelPolicyFile: this.config.channelPolicyFile }),
      // A gateway hosts its instance for long: it runs the janitor for its sessions.
      janitor: true,
      ...(this.config.auth !== undefined && { auth: this.config.auth }),
      connection: {
        name: `clawmesh-openclaw-${this.config.instance}`,
        maxReconnectAttempts: -1,
        reconnectTimeWait: 500,
        timeout: 3000,
      },
    })
      .then((m) => {
        this.mesh = m;
        this.connected = true;
        this.logger.info(`clawmesh: connected to NATS as instance ${this.config.instance}`);
        void this.followStatus(m);
        this.childCompletions.retryNow();
        void this.startWaking(m);
        return m;
      })
      .catch((err: unknown) => {
        this.lastError = describe(err);
        const failure = connectFailure(err);
        const servers = JSON.stringify(this.config.servers ?? "nats://127.0.0.1:4222");
        if (failure instanceof MeshUnavailableError) this.logger.error(`clawmesh: cannot reach NATS at ${servers}: ${this.lastError}`);
        else this.logger.error(`clawmesh: NATS at ${servers} refused this gateway or the mesh is misconfigured (${failure.code}): ${this.lastError}`);
        throw failure;
      })
      .finally(() => {
        this.connecting = undefined;
      });
    return this.connecting;
  }

  /** False while the connection is down and the client is reconnecting. */
  connected = false;

  private async followStatus(m: Mesh): Promise<void> {
    for await (const s of m.status()) {
      if (s.type === "disconnect") {
        this.connected = false;
        this.logger.warn(`clawmesh: lost the NATS connection; reconnecting (nothing accepted is lost)`);
      } else if (s.type === "reconnect") {
        this.connected = true;
        this.logger.info(`clawmesh: reconnected to NATS`);
        this.childCompletions.retryNow();
      }
    }
  }

  /**
   * Follow this instance's arrivals and wake idle sessions (waker.ts): one ordered consumer on the
   * instance's inbox stream for the life of the connection. Sessions with something pending now
   * (stored while the gateway was down, say) are looked at once at start.
   */
  private async startWaking(m: Mesh): Promise<void> {
    const kinds = wakeKinds(this.config);
    if (kinds.size === 0 || this.waking) return;
    if (!this.wakeSeam.available) {
      logNoSeam(this.logger);
      return;
    }
    const waker = new Waker({
      seam: this.wakeSeam,
      isRunning: (session) => this.isRunning(session),
      firstPending: (session) => firstWakingPending(m, session, kinds),
      logger: this.logger,
      timing: this.wakeTiming,
    });
    try {
      const arrivals = await m.sessions.arrivals((a) => {
        if (!kinds.has(a.kind)) return;
        this.logger.debug?.(`clawmesh: ${a.kind} arrived for ${sessionKeyOf(a.session)}`);
        waker.arrived(a.session);
      });
      if (this.stopped || this.mesh !== m) {
        arrivals.stop();
        return;
      }
      this.waking = { waker, arrivals };
      this.logger.info(`clawmesh: sessions that are not running a turn are woken when ${[...kinds].join(", ")} arrives (${this.wakeSeam.describe()})`);
      for (const session of await m.sessions.withStored()) waker.arrived(session);
    } catch (err) {
      this.logger.warn(`clawmesh: cannot follow arrivals, so idle sessions are not woken (they see their messages at their next turn): ${describe(err)}`);
    }
  }

  /** Resolves once no wake is due, waiting or under way. */
  wakesSettled(): Promise<void> {
    return this.waking?.waker.whenIdle() ?? Promise.resolve();
  }

  /** Whether a turn of the session (under any of its keys, e.g. a cron run's) holds its run. */
  private isRunning(session: SessionAddress): boolean {
    const key = sessionKeyOf(session);
    return [...this.runs.keys()].some((k) => durableKey(k, this.config.instance) === key);
  }

  async meshOrThrow(): Promise<Mesh> {
    const m = await this.connection();
    if (m.isClosed) throw new MeshUnavailableError("connection closed");
    if (!this.connected) throw new MeshUnavailableError("connection lost, reconnecting");
    return m;
  }

  /**
   * Rephrase a failure that happened because the bus went away, and only that: a refusal of this
   * gateway's identity or permissions, invalid input or a misconfigured mesh stays what it is,
   * even while the connection is down (retrying would not help, so it must not say so).
   */
  explain(err: unknown): unknown {
    if (err instanceof MeshUnavailableError || this.connected) return err;
    return isBusUnreachable(err, { connected: false }) ? new MeshUnavailableError(`connection lost, reconnecting; ${describe(err)}`) : err;
  }

  /** The session's open run, opened on first use in a turn. */
  async runFor(sessionKey: string): Promise<MeshSession> {
    await this.meshOrThrow();
    let run = this.runs.get(sessionKey);
    if (!run) {
      run = this.meshOrThrow().then((m) => m.sessions.open(sessionKey, { waitMs: 30_000 }));
      this.runs.set(sessionKey, run);
      run.catch(() => this.runs.delete(sessionKey));
    }
    return run;
  }

  /**
   * Report that a child session ended. When it cannot be published right now (the connection is
   * down or reconnecting), it is kept and retried until it is; this resolves either way.
   */
  async reportChildEnd(c: ChildCompletion): Promise<void> {
    await this.childCompletions.submit(c);
  }

  private async publishChildEnd(c: ChildCompletion): Promise<void> {
    const mesh = await this.meshOrThrow();
    let out;
    try {
      out = await mesh.tasks.finishChild({
        parent: c.parent,
        child: c.child,
        state: c.state,
        ...(c.result !== undefined && { result: c.result }),
        ...(c.error !== undefined && { error: c.error }),
      });
    } catch (err) {
      throw this.explain(err);
    }
    if (out.outcome === "conflict") {
      this.logger.info(`clawmesh: ${c.child} had already ended as ${out.record.state}; the mesh keeps that first outcome`);
    }
  }

  hasRun(sessionKey: string): boolean {
    return this.runs.has(sessionKey);
  }

  /**
   * End a session's run (turn end): settle the block it surfaced (confirmed when the turn went
   * well and a model call carried it; otherwise given back to the inbox by the close), release the
   * lease, record how the turn went.
   */
  async endRun(sessionKey: string, turn?: { outcome: TurnOutcome; error?: string }): Promise<void> {
    try {
      await this.surfaced.turnEnded(sessionKey, turn?.outcome === "ok");
      const run = this.runs.get(sessionKey);
      if (!run) return;
      this.runs.delete(sessionKey);
      const session = await run.catch(() => undefined);
      await session?.close(turn);
    } finally {
      // What arrived after the turn's last model call, or what it did not get through, wakes it again.
      const address = addressOf(sessionKey, this.config.instance);
      if (address) this.waking?.waker.turnEnded(address);
    }
  }

  stopped = false;

  async stop(): Promise<void> {
    this.stopped = true;
    this.waking?.waker.stop();
    this.waking?.arrivals.stop();
    this.waking = undefined;
    for (const key of [...this.runs.keys()]) await this.endRun(key).catch(() => undefined);
    // Best effort: no new connection is opened just for this.
    await this.childCompletions.stop({ lastTry: this.connected && this.mesh !== undefined });
    await this.mesh?.close();
    this.mesh = undefined;
    this.connected = false;
  }
}

function addressOf(sessionKey: string, instance: string): SessionAddress | undefined {
  try {
    return parseSessionKey(sessionKey, instance);
  } catch {
    return undefined;
  }
}

/** The session a key reads (a cron run's key reads its job's session); undefined for a key that is not one. */
function durableKey(sessionKey: string, instance: string): string | undefined {
  const a = addressOf(sessionKey, instance);
  return a && sessionKeyOf(a);
}
