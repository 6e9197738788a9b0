/**
 * How the plugin asks OpenClaw for a turn of a session that is not running one. Measured in real
 * gateways (openclaw 2026.9.x):
 *
 * - `runHeartbeatOnce({sessionKey, agentId, heartbeat: {target: "none"}})` runs one heartbeat turn
 *   in that session now and says how it went. Target `none` keeps the turn internal, so it also
 *   runs for a session with no channel route (the default target skips those: `no-route`). It is
 *   not rate-limited, but it skips (`requests-in-flight`) while any run of the same agent is active.
 * - otherwise `enqueueSystemEvent` + `requestHeartbeat({intent: "event"})`: the scheduler's wake,
 *   coalesced and rate-limited per agent (30 s between event turns, a flood guard), with no result.
 *
 * Not used: `runtime.subagent.run` (the session then looks like the plugin's own child) and
 * `enqueueNextTurnInjection` (starts no turn).
 *
 * OpenClaw calls register() several times in one process and a runtime facade refuses calls once
 * its registry is no longer the active one (it throws at once), so every api offered is kept and
 * the newest that accepts the call is used.
 */
import type { HostLogger, HostSystem, PluginApi } from "./host-types.js";

export type WakeOutcome =
  /** A turn ran (runHeartbeatOnce resolved with `ran`). */
  | { readonly kind: "ran" }
  /** A turn was asked for and will run later (the scheduler's wake). */
  | { readonly kind: "requested" }
  /** OpenClaw declined for now (`reason`), e.g. a run of the agent is active; `retryAtMs` if it said when. */
  | { readonly kind: "declined"; readonly reason: string; readonly retryAtMs?: number }
  | { readonly kind: "failed"; readonly reason: string };

export interface WakeSeam {
  /** Whether any offered api can start a turn at all. */
  readonly available: boolean;
  wake(sessionKey: string, agentId: string): Promise<WakeOutcome>;
}

/** Names this seam's calls in OpenClaw's heartbeat logs. */
const REASON = "clawmesh:delivery";

/** Shown to the woken turn with the scheduler's wake (runHeartbeatOnce needs no event). */
const EVENT_TEXT = "clawmesh: messages arrived for this session; they are shown with this turn.";

export class HostWakeSeam implements WakeSeam {
  /** Newest first. */
  private readonly systems: HostSystem[] = [];

  offer(api: PluginApi): void {
    const system = api.runtime?.system;
    if (system && !this.systems.includes(system)) this.systems.unshift(system);
  }

  get available(): boolean {
    return this.systems.some((s) => typeof s.runHeartbeatOnce === "function" || typeof s.requestHeartbeat === "function");
  }

  /** What the plugin can use, for the log line at start. */
  describe(): string {
    if (this.systems.some((s) => typeof s.runHeartbeatOnce === "function")) return "runHeartbeatOnce";
    if (this.systems.some((s) => typeof s.requestHeartbeat === "function")) return "requestHeartbeat";
    return "none";
  }

  async wake(sessionKey: string, agentId: string): Promise<WakeOutcome> {
    let refused: unknown = new Error("no api.runtime.system with runHeartbeatOnce or requestHeartbeat");
    const direct = this.systems.filter((s) => typeof s.runHeartbeatOnce === "function");
    for (const system of direct) {
      let running: Promise<Awaited<ReturnType<NonNullable<HostSystem["runHeartbeatOnce"]>>>>;
      try {
        running = system.runHeartbeatOnce!({ reason: REASON, agentId, sessionKey, heartbeat: { target: "none" } });
      } catch (err) {
        // This registry's facade is no longer active: an older or newer one may be.
        refused = err;
        continue;
      }
      try {
        const r = await running;
        if (r.status === "ran") return { kind: "ran" };
        if (r.status === "skipped") return { kind: "declined", reason: r.reason, ...(r.retryAtMs !== undefined && { retryAtMs: r.retryAtMs }) };
        return { kind: "failed", reason: r.reason };
      } catch (err) {
        return { kind: "failed", reason: String(err) };
      }
    }
    for (const system of this.systems.filter((s) => typeof s.requestHeartbeat === "function")) {
      try {
        system.enqueueSystemEvent?.(EVENT_TEXT, { sessionKey, agentId, contextKey: REASON });
        system.requestHeartbeat!({ source: "other", intent: "event", reason: REASON, agentId, sessionKey, heartbeat: { target: "none" } });
        return { kind: "requested" };
      } catch (err) {
        refused = err;
      }
    }
    return { kind: "failed", reason: String(refused) };
  }
}

/** Logged once when waking is wanted and the host has no way to start a turn. */
export function logNoSeam(logger: HostLogger): void {
  logger.warn(
    "clawmesh: this OpenClaw offers no api.runtime.system.runHeartbeatOnce or requestHeartbeat, so sessions that are not running a turn are not woken when messages arrive for them; they see them at their next turn",
  );
}
