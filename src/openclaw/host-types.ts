/**
 * The slice of OpenClaw's plugin API the mesh uses (openclaw 2026.9.x), typed here so the library
 * builds and tests on Node 20 without OpenClaw installed.
 */
export type RegistrationMode = "full" | "discovery" | "tool-discovery" | "setup-only" | "setup-runtime" | "cli-metadata";

export interface HostLogger {
  debug?(message: string): void;
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

export interface ToolFactoryContext {
  readonly agentId?: string;
  readonly sessionKey?: string;
  readonly sessionId?: string;
  readonly messageChannel?: string;
  readonly agentAccountId?: string;
  readonly deliveryContext?: { channel?: string; to?: string; accountId?: string; threadId?: string | number };
  readonly nativeChannelId?: string;
}

export interface HostToolResult {
  content: { type: "text"; text: string }[];
  details: unknown;
}

export interface HostTool {
  name: string;
  label: string;
  description: string;
  parameters: Record<string, unknown>;
  execute(toolCallId: string, params: unknown, signal?: AbortSignal): Promise<HostToolResult>;
}

export interface AgentHookContext {
  readonly runId?: string;
  readonly agentId?: string;
  readonly sessionKey?: string;
  readonly sessionId?: string;
  readonly channel?: string;
  readonly channelId?: string;
  readonly senderId?: string;
}

export interface SubagentHookContext {
  readonly runId?: string;
  readonly childSessionKey?: string;
  readonly requesterSessionKey?: string;
}

/**
 * `agent_end` (PluginHookAgentEndEvent: runId?, messages, success, error?, durationMs?), fired once
 * per attempt. On openclaw 2026.9.6 a run aborted by its timeout reports `success: false` and no
 * error (the abort clears it) and nothing else that says timeout: its model call's
 * `model_call_ended` says `failureKind: "timeout"`. An attempt whose provider call failed reports
 * `success: true` with a last assistant message whose `stopReason` is `"error"`. `outcome` and
 * `timedOut` are read too, for builds that report them.
 */
export interface AgentEndEvent {
  readonly runId?: string;
  readonly success?: boolean;
  readonly error?: string;
  readonly outcome?: string;
  readonly timedOut?: boolean;
  readonly durationMs?: number;
  readonly messages?: readonly unknown[];
}

/**
 * `model_call_started` / `model_call_ended` (PluginHookModelCall*Event): one provider call of an
 * agent run, fired without waiting by the embedded runner. `outcome` says whether it succeeded.
 */
export interface ModelCallEvent {
  readonly runId?: string;
  readonly callId: string;
  readonly sessionKey?: string;
  readonly provider?: string;
  readonly model?: string;
}
export interface ModelCallEndedEvent extends ModelCallEvent {
  readonly outcome: "completed" | "error";
  readonly durationMs?: number;
  readonly errorCategory?: string;
  readonly failureKind?: string;
}

export interface HookHandlers {
  gateway_stop: (event: { reason?: string }, ctx: unknown) => void | Promise<void>;
  before_prompt_build: (event: { prompt?: string }, ctx: AgentHookContext) => Promise<{ prependContext?: string } | void>;
  agent_end: (event: AgentEndEvent, ctx: AgentHookContext) => void | Promise<void>;
  model_call_started: (event: ModelCallEvent, ctx: AgentHookContext) => void | Promise<void>;
  model_call_ended: (event: ModelCallEndedEvent, ctx: AgentHookContext) => void | Promise<void>;
  before_tool_call: (
    event: { toolName: string; params: Record<string, unknown> },
    ctx: AgentHookContext & { toolName?: string },
  ) => Promise<{ params?: Record<string, unknown>; block?: boolean; blockReason?: string } | void>;
  tool_result_persist: (event: Record<string, unknown>, ctx: AgentHookContext) => unknown;
  subagent_spawned: (event: { childSessionKey: string; label?: string }, ctx: SubagentHookContext) => void | Promise<void>;
  subagent_ended: (event: { targetSessionKey: string; outcome?: string; error?: string }, ctx: SubagentHookContext) => void | Promise<void>;
  message_sending: (event: { content: string }, ctx: unknown) => { content?: string; cancel?: boolean } | void;
  session_end: (event: { sessionKey?: string }, ctx: { sessionKey?: string }) => void | Promise<void>;
}

export interface ToolResultMiddlewareEvent {
  readonly toolCallId?: string;
  readonly toolName: string;
  readonly isError?: boolean;
  readonly result: { content: { type: string; text?: string }[]; details?: unknown };
}

/** How one heartbeat cycle went (`HeartbeatRunResult`, src/infra/heartbeat-wake-contracts.ts). */
export type HeartbeatRunResult =
  | { readonly status: "ran"; readonly durationMs?: number }
  | { readonly status: "skipped"; readonly reason: string; readonly retryAtMs?: number }
  | { readonly status: "failed"; readonly reason: string };

/**
 * `api.runtime.system` (openclaw 2026.9.x, plugin-entry .d.ts `PluginRuntime.system`): what starts
 * a turn for a session that is not running one. The plugin's runtime facade passes
 * `runHeartbeatOnce` only `reason`, `agentId`, `sessionKey` and `heartbeat.target`; every call
 * throws synchronously when the registry it was handed through is no longer the active one.
 */
export interface HostSystem {
  /** Run one heartbeat turn now for the session; resolves when it ran or was skipped (and why). */
  runHeartbeatOnce?(opts: { reason?: string; agentId?: string; sessionKey?: string; heartbeat?: { target?: string } }): Promise<HeartbeatRunResult>;
  /** Queue text shown to the session's next turn (returns whether it was queued). */
  enqueueSystemEvent?(text: string, opts: { sessionKey: string; agentId?: string; contextKey?: string }): boolean;
  /** Ask the heartbeat scheduler for a turn (coalesced, rate-limited per agent; no result). */
  requestHeartbeat?(opts: { source: string; intent: string; reason?: string; agentId?: string; sessionKey?: string; heartbeat?: { target?: string } }): void;
}

export interface PluginApi {
  readonly registrationMode?: RegistrationMode;
  /** OpenClaw's in-process runtime helpers (only the part the mesh reads). */
  readonly runtime?: {
    readonly subagent?: {
      getSessionMessages?(req: { sessionKey: string; limit?: number }): Promise<{ messages: unknown[] }>;
    };
    readonly system?: HostSystem;
  };
  /**
   * Rewrites a tool's result before the next model request of the same turn sees it (any tool).
   * Needs `contracts.agentToolResultMiddleware: ["openclaw"]` in the manifest.
   */
  registerAgentToolResultMiddleware?(
    handler: (event: ToolResultMiddlewareEvent, ctx: { sessionKey?: string; agentId?: string; runId?: string }) => Promise<{ result: ToolResultMiddlewareEvent["result"] } | void>,
    opts?: Record<string, unknown>,
  ): void;
  readonly pluginConfig?: Record<string, unknown>;
  readonly logger: HostLogger;
  registerTool(factory: (ctx: ToolFactoryContext) => HostTool | null, opts: { name: string }): void;
  registerService(service: { id: string; start(ctx: unknown): Promise<void> | void; stop?(ctx: unknown): Promise<void> | void }): void;
  on<K extends keyof HookHandlers>(hook: K, handler: HookHandlers[K], opts?: Record<string, unknown>): void;
}
