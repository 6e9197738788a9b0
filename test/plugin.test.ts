import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readFileSync } from "node:fs";
import { registerClawmesh } from "../src/openclaw/register.js";
import { PendingCompletions } from "../src/openclaw/pending-completions.js";
import { MeshMisconfiguredError, MeshRuntime, MeshUnavailableError } from "../src/openclaw/runtime.js";
import { InvalidAddressError, SendFailedError, TopologyConflictError, ValidationError } from "../src/errors.js";
import { NotProvisionedError } from "../src/topology/index.js";
import { PluginConfigSchema, pluginConfigJsonSchema } from "../src/openclaw/config.js";
import type { HeartbeatRunResult, HookHandlers, HostSystem, HostTool, PluginApi, ToolFactoryContext } from "../src/openclaw/host-types.js";
import { Waker } from "../src/openclaw/waker.js";
import type { WakeOutcome } from "../src/openclaw/wake-seam.js";
import { Latch } from "./harness/agents.js";
import { meshTools, type Mesh } from "../src/index.js";
import { startTestServer, type TestServer } from "./harness/server.js";
import { inspect, openMesh, uniquePrefix, removeTestStreams } from "./harness/mesh.js";

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(async () => {
  await removeTestStreams(server);
  await server.dispose();
});

type BeforeToolCall = HookHandlers["before_tool_call"];
type Handler = { run: (...args: never[]) => unknown; priority: number };

/**
 * OpenClaw's contract for before_tool_call handlers (docs: plugins/hooks/tool-policy): they run one
 * after another, higher priority first; a block ends the chain; each sees the original params and
 * the last returned params win.
 */
function runToolCallGate(handlers: readonly Handler[]): BeforeToolCall {
  return async (event, ctx) => {
    let params: Record<string, unknown> | undefined;
    for (const h of handlers) {
      const r = await (h.run as BeforeToolCall)({ ...event, params: { ...event.params } }, ctx);
      if (!r) continue;
      if (r.block === true) return { block: true, ...(r.blockReason !== undefined && { blockReason: r.blockReason }) };
      if (r.params) params = r.params;
    }
    return params ? { params } : undefined;
  };
}

/** A stand-in for OpenClaw's registration API that records what the plugin registers. */
/** Hooks whose handlers OpenClaw all runs, merging no result (`runVoidHook`). */
const OBSERVING_HOOKS: ReadonlySet<string> = new Set(["model_call_started", "model_call_ended", "agent_end"]);

function fakeApi(
  pluginConfig: Record<string, unknown>,
  registrationMode: PluginApi["registrationMode"] = "full",
  host: { transcripts?: Record<string, unknown[]>; system?: HostSystem } = {},
) {
  const tools = new Map<string, (ctx: ToolFactoryContext) => HostTool | null>();
  const hooks = new Map<string, Handler[]>();
  const services: { id: string; start(ctx: unknown): unknown; stop?(ctx: unknown): unknown }[] = [];
  const logs: string[] = [];
  const toolResultMiddleware: Parameters<NonNullable<PluginApi["registerAgentToolResultMiddleware"]>>[0][] = [];
  const logWaiters: { pattern: RegExp; resolve: (line: string) => void }[] = [];
  const log = (line: string) => {
    logs.push(line);
    for (const w of logWaiters.filter((x) => x.pattern.test(line))) {
      logWaiters.splice(logWaiters.indexOf(w), 1);
      w.resolve(line);
    }
  };
  const api: PluginApi = {
    registrationMode,
    pluginConfig,
    logger: { debug: (m) => log(`debug ${m}`), info: (m) => log(`info ${m}`), warn: (m) => log(`warn ${m}`), error: (m) => log(`error ${m}`) },
    runtime: {
      subagent: { getSessionMessages: async ({ sessionKey }) => ({ messages: host.transcripts?.[sessionKey] ?? [] }) },
      ...(host.system && { system: host.system }),
    },
    registerTool: (factory, opts) => tools.set(opts.name, factory),
    registerService: (s) => services.push(s),
    registerAgentToolResultMiddleware: (handler) => toolResultMiddleware.push(handler),
    on: (name, handler, opts) => {
      const list = hooks.get(name) ?? [];
      list.push({ run: handler as never, priority: typeof opts?.priority === "number" ? opts.priority : 0 });
      list.sort((a, b) => b.priority - a.priority);
      hooks.set(name, list);
    },
  };
  const hook = <K extends keyof HookHandlers>(name: K): HookHandlers[K] => {
    const list = hooks.get(name) ?? [];
    if (name === "before_tool_call") return runToolCallGate(list) as HookHandlers[K];
    // Observing hooks: OpenClaw runs every handler (in parallel) and merges nothing.
    if (OBSERVING_HOOKS.has(name)) return (async (event: never, ctx: never) => void (await Promise.all(list.map((h) => (h.run as (e: never, c: never) => unknown)(event, ctx))))) as HookHandlers[K];
    // The plugin registers every other hook once; a second handler would need its merge rule modelled here.
    if (list.length !== 1) throw new Error(`expected one ${name} handler, found ${list.length}`);
    return list[0]!.run as HookHandlers[K];
  };
  /** Resolves with the first log line (already written or still to come) that matches. */
  const logged = (pattern: RegExp) =>
    new Promise<string>((resolve) => {
      const seen = logs.find((l) => pattern.test(l));
      if (seen !== undefined) resolve(seen);
      else logWaiters.push({ pattern, resolve });
    });
  /** Resolves once `times` log lines (already written or still to come) match. */
  const loggedTimes = (pattern: RegExp, times: number) =>
    new Promise<void>((resolve) => {
      let seen = logs.filter((l) => pattern.test(l)).length;
      if (seen >= times) return resolve();
      const watch = () =>
        logWaiters.push({
          pattern,
          resolve: () => {
            if (++seen >= times) resolve();
            else watch();
          },
        });
      watch();
    });
  /** A tool of the turn returned `text`: what the model's next request sees as its result. */
  const toolResult = async (sessionKey: string, text: string) => {
    if (toolResultMiddleware.length !== 1) throw new Error(`expected one tool-result middleware, found ${toolResultMiddleware.length}`);
    const out = await toolResultMiddleware[0]!({ toolName: "read", result: { content: [{ type: "text", text }] } }, { sessionKey });
    return (out?.result.content ?? [{ type: "text", text }]).map((c) => c.text ?? "").join("\n");
  };
  return { api, tools, hooks, hook, services, logs, logged, loggedTimes, toolResult };
}

type RunHeartbeatOnce = NonNullable<HostSystem["runHeartbeatOnce"]>;

/**
 * OpenClaw's heartbeat as the plugin meets it (openclaw 2026.9.x, heartbeat-runner-run): while a
 * run of the agent is active `runHeartbeatOnce` declines (`requests-in-flight`); otherwise it runs
 * one turn in the session (prompt build, one model call, the turn's end) and resolves after it.
 */
function fakeHeartbeats() {
  const calls: Parameters<RunHeartbeatOnce>[0][] = [];
  const turns: { sessionKey: string; block: string | undefined }[] = [];
  const turnWaiters: ((t: { sessionKey: string; block: string | undefined }) => void)[] = [];
  /** Agents with a run OpenClaw counts as active (a test's own turns add theirs). */
  const activeAgents = new Set<string>();
  let hook: ReturnType<typeof fakeApi>["hook"] | undefined;
  let hold: Latch | undefined;
  const entered = new Latch();
  let runs = 0;
  const runHeartbeatOnce: RunHeartbeatOnce = async (opts) => {
    calls.push(opts);
    const agentId = opts.agentId!;
    const sessionKey = opts.sessionKey!;
    if (activeAgents.has(agentId)) return { status: "skipped", reason: "requests-in-flight" } satisfies HeartbeatRunResult;
    activeAgents.add(agentId);
    try {
      entered.open();
      await hold?.opened;
      const runId = `hb-${++runs}`;
      const ctx = { runId, sessionKey, agentId };
      const built = await hook!("before_prompt_build")({ prompt: "heartbeat" }, ctx);
      const turn = { sessionKey, block: built?.prependContext };
      turns.push(turn);
      turnWaiters.shift()?.(turn);
      await hook!("model_call_started")({ runId, callId: `${runId}-c`, sessionKey }, ctx);
      await hook!("model_call_ended")({ runId, callId: `${runId}-c`, sessionKey, outcome: "completed" }, ctx);
      await hook!("agent_end")({ success: true }, ctx);
      return { status: "ran", durationMs: 1 };
    } finally {
      activeAgents.delete(agentId);
    }
  };
  return {
    system: { runHeartbeatOnce } satisfies HostSystem,
    calls,
    turns,
    activeAgents,
    /** Opens when a heartbeat turn has started (and, if held, waits for the test). */
    entered,
    attach: (f: ReturnType<typeof fakeApi>) => (hook = f.hook),
    /** Hold every heartbeat turn before its prompt is built until `latch` opens. */
    holdUntil: (latch: Latch) => (hold = latch),
    nextTurn: () => new Promise<{ sessionKey: string; block: string | undefined }>((resolve) => turnWaiters.push(resolve)),
  };
}

describe("OpenClaw plugin", () => {
  it("ships a manifest whose config schema and tool list come from the code", () => {
    const manifest = JSON.parse(readFileSync(new URL("../openclaw.plugin.json", import.meta.url), "utf8")) as { id: string; configSchema: unknown; contracts: { tools: string[] } };
    expect(manifest.id).toBe("clawmesh");
    expect(manifest.configSchema).toEqual(pluginConfigJsonSchema());
    expect(manifest.contracts.tools).toEqual(meshTools.map((t) => t.name));
    expect((manifest.contracts as { agentToolResultMiddleware?: string[] }).agentToolResultMiddleware).toEqual(["openclaw"]);
    const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { openclaw: { extensions: string[] }; dependencies: Record<string, string> };
    expect(pkg.openclaw.extensions).toEqual(["./dist/openclaw/plugin.js"]);
    expect(pkg.dependencies.openclaw).toBeUndefined();
  });

  it("registers tools and hooks in discovery mode but no service, and nothing at all for metadata loads", () => {
    const f = fakeApi({ instance: "gw1" }, "discovery");
    registerClawmesh(f.api);
    expect([...f.tools.keys()]).toEqual(meshTools.map((t) => t.name));
    expect(f.services).toEqual([]);
    expect(f.hooks.has("before_prompt_build")).toBe(true);
    const meta = fakeApi({ instance: "gw1" }, "cli-metadata");
    registerClawmesh(meta.api);
    expect(meta.services).toEqual([]);
    expect(meta.hooks.size).toBe(0);
  });

  it("rejects a bad plugin config naming the field", () => {
    expect(() => registerClawmesh(fakeApi({ instance: "GW 1" }).api)).toThrow(/invalid clawmesh plugin config: instance:/);
    expect(() => registerClawmesh(fakeApi({ instance: "gw1", bogus: 1 }).api)).toThrow(/Unrecognized key/);
  });

  it("runs a tool for the calling session from OpenClaw's context, and surfaces the reply into that session's next prompt once", async () => {
    const prefix = uniquePrefix();
    const f = fakeApi({ instance: "gw1", servers: server.url, prefix });
    const runtime = registerClawmesh(f.api)!;
    await f.services[0]!.start({});
    const other: Mesh = await openMesh(server, { prefix, instance: "gw2" });

    const send = f.tools.get("mesh_send")!({ agentId: "main", sessionKey: "agent:main:main", deliveryContext: { channel: "telegram", to: "42" } })!;
    const out = await send.execute("call1", { sessionKey: "agent:main:main", instance: "gw2", message: "hello from gw1" });
    expect(out.content[0]!.text).toContain("delivered to the inbox of gw2/agent:main:main");

    const peer = await other.sessions.open("agent:main:main");
    const batch = await peer.take();
    expect(batch.messages[0]!.envelope.origin).toMatchObject({ channel: "telegram", to: "42", session: { instance: "gw1" } });
    await peer.reply(batch.messages[0]!, "hello back");
    await batch.confirm();

    await f.hook("agent_end")({ success: true }, { sessionKey: "agent:main:main" });
    const first = await f.hook("before_prompt_build")({}, { sessionKey: "agent:main:main" });
    expect(first?.prependContext).toContain("[reply from agent:main:main @gw2");
    expect(first?.prependContext).toContain("hello back");
    // The turn's model call carried it and succeeded: confirmed, not shown in the next turn.
    await f.hook("model_call_started")({ callId: "c1", sessionKey: "agent:main:main" }, { sessionKey: "agent:main:main" });
    await f.hook("model_call_ended")({ callId: "c1", sessionKey: "agent:main:main", outcome: "completed" }, { sessionKey: "agent:main:main" });
    await f.hook("agent_end")({ success: true }, { sessionKey: "agent:main:main" });
    const again = await f.hook("before_prompt_build")({}, { sessionKey: "agent:main:main" });
    expect(again).toBeUndefined();

    await peer.close();
    await other.close();
    await runtime.stop();
  });

  describe("surfacing across failed model calls", () => {
    const key = "agent:main:main";
    /** Confirms recorded in the session's seen log (`delta` records naming ids; a fence written at open names none). */
    const confirmedBatches = async (prefix: string) => {
      const ins = await inspect(server, prefix);
      const stream = ins.names.seenStream("gw1");
      const subject = ins.names.seenSubject(ins.address(key, "gw1"));
      const last = (await ins.jsm.streams.info(stream)).state.last_seq;
      let deltas = 0;
      for (let seq = 1; seq <= last; seq++) {
        const m = await ins.jsm.streams.getMessage(stream, { seq }).catch(() => undefined);
        if (m?.subject !== subject) continue;
        const record = m.json<{ kind: string; groups: { ids: string[] }[] }>();
        if (record.kind === "delta" && record.groups.some((g) => g.ids.length > 0)) deltas++;
      }
      return deltas;
    };
    const setup = async () => {
      const prefix = uniquePrefix();
      const f = fakeApi({ instance: "gw1", servers: server.url, prefix });
      const runtime = registerClawmesh(f.api)!;
      await f.services[0]!.start({});
      const other: Mesh = await openMesh(server, { prefix, instance: "gw2" });
      await other.send({ from: key, to: { sessionKey: key, instance: "gw1" }, body: "ping once" });
      await other.close();
      /** One provider call of run `runId`, ended as OpenClaw reports it. */
      const modelCall = async (runId: string, callId: string, outcome: "completed" | "error") => {
        await f.hook("model_call_started")({ runId, callId, sessionKey: key, provider: "fake", model: "scripted" }, { runId, sessionKey: key });
        await f.hook("model_call_ended")({ runId, callId, sessionKey: key, provider: "fake", model: "scripted", outcome, durationMs: 5, ...(outcome === "error" && { errorCategory: "http_500" }) }, { runId, sessionKey: key });
      };
      return { prefix, f, runtime, modelCall };
    };

    it("gives the retry of a failed model call the same block and confirms it once, after the call that succeeded", async () => {
      const { prefix, f, runtime, modelCall } = await setup();
      const first = await f.hook("before_prompt_build")({}, { runId: "r1", sessionKey: key });
      expect(first?.prependContext).toContain("ping once");
      await modelCall("r1", "c1", "error");
      // A call of another run of the session (a compaction's) carries no prompt context: it confirms nothing.
      await modelCall("compaction-1", "k1", "completed");
      // OpenClaw retries the attempt with a fresh prompt build.
      const retry = await f.hook("before_prompt_build")({}, { runId: "r1", sessionKey: key });
      expect(retry).toEqual(first);
      expect(await confirmedBatches(prefix)).toBe(0);
      await modelCall("r1", "c2", "completed");
      // A tool the model asked for: its result waits for the confirm, and has nothing more to add.
      expect(await f.toolResult(key, "file contents")).toBe("file contents");
      expect(await confirmedBatches(prefix)).toBe(1);
      await f.hook("agent_end")({ success: true }, { runId: "r1", sessionKey: key });

      expect(await f.hook("before_prompt_build")({}, { runId: "r2", sessionKey: key })).toBeUndefined();
      await f.hook("agent_end")({ success: true }, { runId: "r2", sessionKey: key });
      expect(await confirmedBatches(prefix)).toBe(1);
      await runtime.stop();
    });

    it("shows the message in the next turn when the only model call of a turn failed", async () => {
      const { prefix, f, runtime, modelCall } = await setup();
      const failed = await f.hook("before_prompt_build")({}, { runId: "r1", sessionKey: key });
      expect(failed?.prependContext).toContain("ping once");
      await modelCall("r1", "c1", "error");
      await f.hook("agent_end")({ success: false, error: "provider returned 500" }, { runId: "r1", sessionKey: key });
      expect(await confirmedBatches(prefix)).toBe(0);

      const next = await f.hook("before_prompt_build")({}, { runId: "r2", sessionKey: key });
      expect(next?.prependContext?.split("ping once")).toHaveLength(2);
      await modelCall("r2", "c2", "completed");
      await f.hook("agent_end")({ success: true }, { runId: "r2", sessionKey: key });
      expect(await confirmedBatches(prefix)).toBe(1);
      expect(await f.hook("before_prompt_build")({}, { runId: "r3", sessionKey: key })).toBeUndefined();
      await runtime.stop();
    });

    it("confirms a block appended to a tool result only after the next model call succeeded, and keeps it for a retry", async () => {
      const { prefix, f, runtime, modelCall } = await setup();
      // The turn started before the message was taken: nothing to prepend... then it is taken by a tool result.
      await runtime.runFor(key);
      const withBlock = await f.toolResult(key, "result A");
      expect(withBlock).toContain("ping once");
      // A sibling tool of the same model response: the block is already on its way, nothing more.
      expect(await f.toolResult(key, "result B")).toBe("result B");
      await modelCall("r1", "c1", "error");
      expect(await confirmedBatches(prefix)).toBe(0);
      const retry = await f.hook("before_prompt_build")({}, { runId: "r1", sessionKey: key });
      expect(retry?.prependContext).toContain("ping once");
      await modelCall("r1", "c2", "completed");
      await f.hook("agent_end")({ success: true }, { runId: "r1", sessionKey: key });
      expect(await confirmedBatches(prefix)).toBe(1);
      expect(await f.hook("before_prompt_build")({}, { runId: "r2", sessionKey: key })).toBeUndefined();
      await runtime.stop();
    });

    it("shows a block again after the gateway went away while a model call carrying it was in flight", async () => {
      const { prefix, f, runtime } = await setup();
      const shown = await f.hook("before_prompt_build")({}, { runId: "r1", sessionKey: key });
      expect(shown?.prependContext).toContain("ping once");
      await f.hook("model_call_started")({ runId: "r1", callId: "c1", sessionKey: key }, { runId: "r1", sessionKey: key });
      await runtime.stop();
      expect(await confirmedBatches(prefix)).toBe(0);

      const again = fakeApi({ instance: "gw1", servers: server.url, prefix });
      const restarted = registerClawmesh(again.api)!;
      await again.services[0]!.start({});
      const next = await again.hook("before_prompt_build")({}, { runId: "r2", sessionKey: key });
      expect(next?.prependContext).toContain("ping once");
      await restarted.stop();
    });
  });

  describe("wake on delivery", () => {
    const setup = async (config: Record<string, unknown> = {}) => {
      const prefix = uniquePrefix();
      const hb = fakeHeartbeats();
      const f = fakeApi({ instance: "gw1", servers: server.url, prefix, ...config }, "full", { system: hb.system });
      hb.attach(f);
      const runtime = registerClawmesh(f.api)!;
      await f.services[0]!.start({});
      const other: Mesh = await openMesh(server, { prefix, instance: "gw2" });
      const done = async () => {
        await other.close();
        await runtime.stop();
      };
      return { prefix, hb, f, runtime, other, done };
    };
    const modelCall = async (f: ReturnType<typeof fakeApi>, runId: string, sessionKey: string) => {
      await f.hook("model_call_started")({ runId, callId: `${runId}-c`, sessionKey }, { runId, sessionKey });
      await f.hook("model_call_ended")({ runId, callId: `${runId}-c`, sessionKey, outcome: "completed" }, { runId, sessionKey });
    };

    it("starts one turn for an idle session when its task completes, with no channel route, and shows the result there once", async () => {
      const { hb, f, runtime, other, done } = await setup();
      await f.logged(/^info clawmesh: sessions that are not running a turn are woken when task.complete, watch.event, reply, msg arrives \(runHeartbeatOnce\)/);
      const key = "agent:main:cron:billing";
      // The session delegates in a turn of its own; its end wakes nothing (nothing is pending).
      await f.hook("before_prompt_build")({}, { runId: "u1", sessionKey: `${key}:run:r1` });
      const delegate = f.tools.get("mesh_delegate")!({ agentId: "main", sessionKey: `${key}:run:r1` })!;
      const out = await delegate.execute("c1", { sessionKey: "agent:ops:main", instance: "gw2", message: "occupancy for April" });
      const { taskId } = (out.details as { clawmesh: { taskId: string } }).clawmesh;
      await f.hook("agent_end")({ success: true }, { runId: "u1", sessionKey: `${key}:run:r1` });
      await runtime.wakesSettled();
      expect(hb.calls).toEqual([]);

      const woken = hb.nextTurn();
      await other.tasks.finish({ taskId, by: { sessionKey: "agent:ops:main", instance: "gw2" }, state: "completed", result: "occupancy 97%" });
      const turn = await woken;
      expect(turn.sessionKey).toBe(key);
      expect(turn.block?.split("occupancy 97%")).toHaveLength(2);
      await runtime.wakesSettled();
      // The run's key folds into its job's session: that is the one woken, internally (no channel needed).
      expect(hb.calls).toEqual([{ reason: "clawmesh:delivery", agentId: "main", sessionKey: key, heartbeat: { target: "none" } }]);
      expect(await f.hook("before_prompt_build")({}, { runId: "u2", sessionKey: `${key}:run:r2` })).toBeUndefined();
      await done();
    });

    it("coalesces a burst of 10 arrivals into one wake, from one consumer for the whole gateway", async () => {
      const { prefix, hb, f, runtime, other, done } = await setup();
      const key = "agent:main:telegram:direct:1002";
      const hold = new Latch();
      hb.holdUntil(hold);
      const woken = hb.nextTurn();
      const sent = await Promise.all(Array.from({ length: 10 }, (_, i) => other.send({ from: "agent:ops:main", to: { sessionKey: key, instance: "gw1" }, body: `news ${i}` })));
      await f.loggedTimes(/^debug clawmesh: msg arrived for agent:main:telegram:direct:1002$/, 10);
      await hb.entered.opened;
      // Learnt from the gateway's one arrivals consumer: none per message, none per session yet.
      const ins = await inspect(server, prefix);
      expect((await ins.jsm.consumers.list(ins.names.inboxStream("gw1")).next()).length).toBe(1);
      hold.open();
      const turn = await woken;
      for (const m of sent) expect(turn.block).toContain(`[mesh id=${m.id}]`);
      await runtime.wakesSettled();
      expect(hb.calls).toHaveLength(1);
      expect(hb.turns).toHaveLength(1);
      await done();
    });

    it("never starts a turn beside a running one: the running turn shows the arrival mid-turn, and its end wakes nothing", async () => {
      const { hb, f, runtime, other, done } = await setup();
      const key = "agent:main:main";
      hb.activeAgents.add("main");
      expect(await f.hook("before_prompt_build")({}, { runId: "u1", sessionKey: key })).toBeUndefined();
      await other.send({ from: "agent:ops:main", to: { sessionKey: key, instance: "gw1" }, body: "mid-turn news" });
      await f.logged(/^debug clawmesh: agent:main:main is running a turn: no wake/);
      expect(await f.toolResult(key, "status ok")).toContain("mid-turn news");
      await modelCall(f, "u1", key);
      hb.activeAgents.delete("main");
      await f.hook("agent_end")({ success: true }, { runId: "u1", sessionKey: key });
      await runtime.wakesSettled();
      expect(hb.calls).toEqual([]);
      await done();
    });

    it("wakes another session of a busy agent once the agent's running turn has ended", async () => {
      const { hb, f, runtime, other, done } = await setup();
      const busyKey = "agent:main:main";
      const idleKey = "agent:main:telegram:direct:7";
      hb.activeAgents.add("main");
      await f.hook("before_prompt_build")({}, { runId: "u1", sessionKey: busyKey });
      const woken = hb.nextTurn();
      await other.send({ from: "agent:ops:main", to: { sessionKey: idleKey, instance: "gw1" }, body: "for the idle one" });
      await f.logged(/^debug clawmesh: waking agent:main:telegram:direct:7 later: OpenClaw declined the turn \(requests-in-flight\)/);
      await modelCall(f, "u1", busyKey);
      hb.activeAgents.delete("main");
      await f.hook("agent_end")({ success: true }, { runId: "u1", sessionKey: busyKey });
      const turn = await woken;
      expect(turn).toMatchObject({ sessionKey: idleKey });
      expect(turn.block).toContain("for the idle one");
      await runtime.wakesSettled();
      expect(hb.calls.map((c) => c.sessionKey)).toEqual([idleKey, idleKey]);
      await done();
    });

    it("wakes, at start, the sessions whose messages arrived while the gateway was down", async () => {
      const prefix = uniquePrefix();
      const key = "agent:main:telegram:direct:9";
      // The instance exists (its gateway ran once) and its gateway is down when the message is stored.
      const before = fakeApi({ instance: "gw1", servers: server.url, prefix });
      const first = registerClawmesh(before.api)!;
      await before.services[0]!.start({});
      await first.stop();
      const other: Mesh = await openMesh(server, { prefix, instance: "gw2" });
      const stored = await other.send({ from: "agent:ops:main", to: { sessionKey: key, instance: "gw1" }, body: "while you were away" });
      await other.close();
      const hb = fakeHeartbeats();
      const f = fakeApi({ instance: "gw1", servers: server.url, prefix }, "full", { system: hb.system });
      hb.attach(f);
      const woken = hb.nextTurn();
      const runtime = registerClawmesh(f.api)!;
      await f.services[0]!.start({});
      const turn = await woken;
      expect(turn.sessionKey).toBe(key);
      expect(turn.block).toContain(`[mesh id=${stored.id}]`);
      await runtime.wakesSettled();
      expect(hb.calls).toHaveLength(1);
      await runtime.stop();
    });

    it("says clearly when the host cannot start a turn, and follows nothing when waking is off", async () => {
      const prefix = uniquePrefix();
      const bare = fakeApi({ instance: "gw1", servers: server.url, prefix });
      const runtime = registerClawmesh(bare.api)!;
      await bare.services[0]!.start({});
      await bare.logged(/^warn clawmesh: this OpenClaw offers no api.runtime.system.runHeartbeatOnce or requestHeartbeat, so sessions .* are not woken/);
      await runtime.stop();

      const hb = fakeHeartbeats();
      const off = fakeApi({ instance: "gw1", servers: server.url, prefix: uniquePrefix(), wakeOn: "off" }, "full", { system: hb.system });
      const quiet = registerClawmesh(off.api)!;
      await off.services[0]!.start({});
      const ins = await inspect(server, quiet.config.prefix!);
      expect((await ins.jsm.consumers.list(ins.names.inboxStream("gw1")).next()).length).toBe(0);
      expect(off.logs.filter((l) => l.includes("woken"))).toEqual([]);
      await quiet.stop();
      expect(() => PluginConfigSchema.parse({ instance: "gw1", wakeOn: [] })).toThrow();
      expect(() => PluginConfigSchema.parse({ instance: "gw1", wakeOn: ["Task Complete"] })).toThrow(/message kind/);
    });

    it("gives up on a session whose wakes never show its first pending message, until something new arrives", async () => {
      const logs: string[] = [];
      const gaveUp = new Latch();
      let wakes = 0;
      const waker = new Waker({
        seam: { available: true, wake: async (): Promise<WakeOutcome> => (wakes++, { kind: "ran" }) },
        isRunning: () => false,
        // The host's turn never builds a prompt for this session (an isolated heartbeat session, say).
        firstPending: async () => 7,
        logger: { info: () => undefined, warn: (m) => (logs.push(m), gaveUp.open()), error: () => undefined },
        timing: { coalesceMs: 1, retryMinMs: 5 },
      });
      const session = { instance: "gw1", agent: "main", channel: "main", session: "" };
      waker.arrived(session);
      await gaveUp.opened;
      await waker.whenIdle();
      expect(wakes).toBe(3);
      expect(logs).toEqual([expect.stringMatching(/^clawmesh: woke agent:main:main 3 times but its first pending message \(stream sequence 7\) was not shown/)]);
      // Something new arrived: it is tried again, as many times.
      waker.arrived(session);
      await waker.whenIdle();
      expect(wakes).toBe(6);
      expect(logs).toHaveLength(2);
      waker.stop();
    });
  });

  it("turns off the native announce of sessions_spawn and strips legacy tokens from outbound text", async () => {
    const f = fakeApi({ instance: "gw1", servers: server.url, prefix: uniquePrefix() });
    const runtime = registerClawmesh(f.api)!;
    const rewritten = await f.hook("before_tool_call")({ toolName: "sessions_spawn", params: { task: "x", completionTarget: "parent" } }, {});
    expect(rewritten).toEqual({ params: { task: "x", completionTarget: undefined, expectsCompletionMessage: false } });
    expect(await f.hook("before_tool_call")({ toolName: "read", params: { path: "a" } }, {})).toBeUndefined();
    expect(f.hook("message_sending")({ content: "🎯 Result received. REPLY_SKIP" }, {})).toEqual({ cancel: true });
    expect(f.hook("message_sending")({ content: "Here you go. ANNOUNCE_SKIP" }, {})).toEqual({ content: "Here you go." });
    expect(f.hook("message_sending")({ content: "plain text" }, {})).toBeUndefined();
    // Any case, a struck-through token, a mention in prose: the channel never shows a bare token.
    expect(f.hook("message_sending")({ content: "Noted, will do. reply_skip" }, {})).toEqual({ cancel: true });
    expect(f.hook("message_sending")({ content: "~~REPLY_SKIP~~ Actually I do have an answer: 42." }, {})).toEqual({ content: "Actually I do have an answer: 42." });
    expect(f.hook("message_sending")({ content: "I won't use REPLY_SKIP here because the user asked" }, {})).toEqual({ content: "I won't use `REPLY_SKIP` here because the user asked" });
    expect(f.hook("message_sending")({ content: "see example.test/NO_REPLY" }, {})).toBeUndefined();
    await runtime.stop();
  });

  it("lets a labelled sessions_spawn through once, then reuses the live child instead of spawning a duplicate", async () => {
    const prefix = uniquePrefix();
    const f = fakeApi({ instance: "gw1", servers: server.url, prefix });
    const runtime = registerClawmesh(f.api)!;
    await f.services[0]!.start({});
    const ctx = { sessionKey: "agent:main:main", agentId: "main" };
    const first = await f.hook("before_tool_call")({ toolName: "sessions_spawn", params: { task: "audit", label: "april-audit" } }, ctx);
    expect(first).toMatchObject({ params: { expectsCompletionMessage: false } });
    await f.hook("subagent_spawned")({ childSessionKey: "agent:main:subagent:c1", label: "april-audit" }, { requesterSessionKey: "agent:main:main" });
    const second = await f.hook("before_tool_call")({ toolName: "sessions_spawn", params: { task: "audit again", label: "april-audit" } }, ctx);
    expect(second).toMatchObject({ block: true });
    expect((second as { blockReason: string }).blockReason).toContain('A session already works on "april-audit": agent:main:subagent:c1 (resumable)');
    await runtime.stop();
  });

  it("takes a child's raw final answer from its agent_end: a trailing REPLY_SKIP finishes it silently although the stored transcript reads as no reply", async () => {
    const prefix = uniquePrefix();
    const parent = "agent:main:main";
    const child = "agent:main:subagent:quiet";
    // The gateway's transcript projection strips control tokens: the stored reply reads as nothing.
    const f = fakeApi({ instance: "gw1", servers: server.url, prefix }, "full", { transcripts: { [child]: [{ role: "assistant", content: "" }] } });
    const runtime = registerClawmesh(f.api)!;
    await f.services[0]!.start({});
    await f.hook("subagent_spawned")({ childSessionKey: child, label: "archive" }, { requesterSessionKey: parent });
    await f.hook("agent_end")({ success: true, messages: [{ role: "user", content: "archive" }, { role: "assistant", content: [{ type: "text", text: "Done. REPLY_SKIP" }], stopReason: "stop" }] }, { sessionKey: child });
    await f.hook("subagent_ended")({ targetSessionKey: child, outcome: "ok" }, { requesterSessionKey: parent });
    await runtime.childCompletions.whenEmpty();
    const mesh = await runtime.meshOrThrow();
    const task = (await mesh.tasks.list()).find((t) => t.childSession === true);
    expect(task).toMatchObject({ state: "completed", action: "skip", result: "Done." });
    // A skip tells the parent's model nothing.
    expect(await f.hook("before_prompt_build")({}, { sessionKey: parent })).toBeUndefined();
    await runtime.stop();
  });

  it("delivers a child's completion that ended while NATS was down once the connection is back, exactly once", async () => {
    const prefix = uniquePrefix();
    const parent = "agent:main:main";
    const child = "agent:main:subagent:c1";
    const f = fakeApi({ instance: "gw1", servers: server.url, prefix }, "full", { transcripts: { [child]: [{ role: "assistant", content: "the answer is 42" }] } });
    const runtime = registerClawmesh(f.api)!;
    await f.services[0]!.start({});
    await f.hook("subagent_spawned")({ childSessionKey: child, label: "calc" }, { requesterSessionKey: parent });

    await server.kill();
    await f.logged(/^warn clawmesh: lost the NATS connection/);
    // The child ends (and OpenClaw reports it a second time) while nothing can be published.
    await f.hook("subagent_ended")({ targetSessionKey: child, outcome: "ok" }, { requesterSessionKey: parent });
    await f.hook("subagent_ended")({ targetSessionKey: child, outcome: "ok" }, { requesterSessionKey: parent });
    expect(runtime.childCompletions.size).toBe(1);
    expect(f.logs.filter((l) => l.startsWith(`warn clawmesh: could not publish the completion of ${child}`))).toHaveLength(1);
    expect(f.logs.filter((l) => l.includes("the answer is 42"))).toEqual([]);

    await server.restart();
    await runtime.childCompletions.whenEmpty();
    expect(f.logs.some((l) => l.startsWith(`info clawmesh: published the completion of ${child} for ${parent}`))).toBe(true);

    expect(await (await inspect(server, prefix)).storedInbox("gw1")).toBe(1);
    const shown = await f.hook("before_prompt_build")({}, { sessionKey: parent });
    expect(shown?.prependContext?.split("the answer is 42")).toHaveLength(2);
    expect(shown?.prependContext).toContain(`completed by ${child} @gw1`);
    await f.hook("model_call_started")({ callId: "c1", sessionKey: parent }, { sessionKey: parent });
    await f.hook("model_call_ended")({ callId: "c1", sessionKey: parent, outcome: "completed" }, { sessionKey: parent });
    await f.hook("agent_end")({ success: true }, { sessionKey: parent });
    expect(await f.hook("before_prompt_build")({}, { sessionKey: parent })).toBeUndefined();
    await runtime.stop();
  });

  it("retries a kept completion on a timer until it is published, and names at stop what could not be", async () => {
    const logs: string[] = [];
    const logger = { info: (m: string) => logs.push(`info ${m}`), warn: (m: string) => logs.push(`warn ${m}`), error: (m: string) => logs.push(`error ${m}`) };
    const attempts: string[] = [];
    let failuresLeft = 3;
    const queue = new PendingCompletions(
      async (c) => {
        attempts.push(c.child);
        if (failuresLeft-- > 0) throw new MeshUnavailableError("connection lost, reconnecting");
      },
      logger,
      { firstMs: 5, maxMs: 20 },
    );
    await queue.submit({ parent: "agent:main:main", child: "agent:main:subagent:a", state: "completed", result: "done" });
    expect(queue.size).toBe(1);
    await queue.whenEmpty();
    expect(attempts).toEqual(Array(4).fill("agent:main:subagent:a"));
    expect(logs.at(-1)).toMatch(/^info clawmesh: published the completion of agent:main:subagent:a for agent:main:main \(attempt 4\)/);

    const never = new PendingCompletions(async () => Promise.reject(new MeshUnavailableError("connection closed")), logger, { firstMs: 60_000, maxMs: 60_000 });
    await never.submit({ parent: "agent:main:main", child: "agent:main:subagent:b", state: "failed", error: "boom" });
    await never.stop({ lastTry: true });
    expect(never.size).toBe(0);
    expect(logs.at(-1)).toBe("error clawmesh: stopping with 1 child completion(s) never published; they are lost: agent:main:subagent:b (for agent:main:main)");

    const unpublishable = new PendingCompletions(async () => Promise.reject(new InvalidAddressError("nope", "not a session key")), logger);
    await unpublishable.submit({ parent: "agent:main:main", child: "nope", state: "completed", result: "x" });
    expect(unpublishable.size).toBe(0);
    expect(logs.at(-1)).toMatch(/^error clawmesh: the completion of nope for agent:main:main cannot be published and is dropped \(invalid_address:/);
  });

  it("routes sessions_send through the mesh when configured and tells the model it was sent there", async () => {
    const prefix = uniquePrefix();
    const f = fakeApi({ instance: "gw1", servers: server.url, prefix, routeSessionsSend: true });
    const runtime = registerClawmesh(f.api)!;
    await f.services[0]!.start({});
    const out = await f.hook("before_tool_call")({ toolName: "sessions_send", params: { sessionKey: "agent:other:main", message: "status?" } }, { sessionKey: "agent:main:main" });
    expect(out).toMatchObject({ block: true });
    expect(out?.blockReason).toMatch(/^Sent through clawmesh \(on this gateway sessions_send goes through clawmesh; the native sessions_send did not run\)\. Message delivered to the inbox of /);
    const recipient = await runtime.runFor("agent:other:main");
    const batch = await recipient.take();
    expect(batch.messages.map((m) => m.body)).toEqual(["status?"]);
    await batch.confirm();
    await runtime.stop();
  });

  it("does not claim a routed sessions_send went through when the bus is unreachable or the send is refused", async () => {
    const down = fakeApi({ instance: "gw1", servers: "nats://127.0.0.1:1", prefix: uniquePrefix(), routeSessionsSend: true });
    const downRuntime = registerClawmesh(down.api)!;
    const unreachable = await down.hook("before_tool_call")({ toolName: "sessions_send", params: { sessionKey: "agent:other:main", message: "hi" } }, { sessionKey: "agent:main:main" });
    expect(unreachable).toMatchObject({ block: true });
    expect(unreachable?.blockReason).toMatch(/^Nothing was sent: .* the clawmesh message bus is unreachable right now\./);
    expect(unreachable?.blockReason).not.toMatch(/Sent through|Routed through|delivered/i);
    await downRuntime.stop();

    const prefix = uniquePrefix();
    const up = fakeApi({ instance: "gw1", servers: server.url, prefix, routeSessionsSend: true });
    const runtime = registerClawmesh(up.api)!;
    await up.services[0]!.start({});
    const refused = await up.hook("before_tool_call")({ toolName: "sessions_send", params: { sessionKey: "not a session key", message: "hi" } }, { sessionKey: "agent:main:main" });
    expect(refused?.blockReason).toMatch(/^Nothing was sent: .* clawmesh refused this send \(invalid_address\): invalid session address/);
    const byLabel = await up.hook("before_tool_call")({ toolName: "sessions_send", params: { label: "april-audit", message: "hi" } }, { sessionKey: "agent:main:main" });
    expect(byLabel?.blockReason).toMatch(/^Nothing was sent: .*\(invalid_parameters\): a sessions_send by label cannot be routed/);
    expect(await (await inspect(server, prefix)).storedInbox("gw1")).toBe(0);
    expect(up.logs.filter((l) => l.startsWith("warn clawmesh: a sessions_send from agent:main:main was not routed"))).toHaveLength(2);
    await runtime.stop();
  });

  it("records a turn that OpenClaw reports as timed out as a timeout, not an error, and the session stays resumable", async () => {
    const prefix = uniquePrefix();
    const f = fakeApi({ instance: "gw1", servers: server.url, prefix });
    const runtime = registerClawmesh(f.api)!;
    await f.services[0]!.start({});
    const other: Mesh = await openMesh(server, { prefix, instance: "gw2" });
    const lastTurn = async (sessionKey: string) => (await other.sessions.get({ sessionKey, instance: "gw1" }))?.lastTurn;

    const ended = [
      ["agent:main:main", { success: false, error: "run timed out after 600s", outcome: "timeout" }, "timeout"],
      ["agent:ops:main", { success: false, error: "LLM request timed out", timedOut: true }, "timeout"],
      ["agent:cron:main", { success: false, error: "provider returned 500" }, "error"],
      ["agent:bot:main", { success: false, outcome: "killed" }, "interrupted"],
      ["agent:docs:main", { success: true, durationMs: 1200, messages: [] }, "ok"],
    ] as const;
    for (const [sessionKey, event, outcome] of ended) {
      await runtime.runFor(sessionKey);
      await f.hook("agent_end")(event, { sessionKey });
      expect(await lastTurn(sessionKey), sessionKey).toMatchObject({ outcome });
    }
    expect(await other.sessions.get({ sessionKey: "agent:main:main", instance: "gw1" })).toMatchObject({ lifecycle: "idle", resumable: true, lastTurn: { outcome: "timeout", error: "run timed out after 600s" } });

    // The shapes openclaw 2026.9.6 really emits (read in its dist, seen in a real gateway): a run
    // aborted by its timeout ends with success false and no error, after its model call ended with
    // failureKind "timeout"; an attempt whose provider call failed ends with success true and a
    // last assistant message that stopped on an error; an abort with no timeout is an interruption.
    const real = [
      ["agent:slow:main", "t1", { runId: "t1", success: false, durationMs: 4010, messages: [{ role: "user", content: "x" }] }, { outcome: "error", failureKind: "timeout" }, "timeout"],
      ["agent:flaky:main", "p1", { runId: "p1", success: true, messages: [{ role: "user" }, { role: "assistant", stopReason: "error", errorMessage: "500 provider error" }] }, { outcome: "error" }, "error"],
      ["agent:stop:main", "s1", { runId: "s1", success: false, messages: [{ role: "user" }] }, undefined, "interrupted"],
      ["agent:late:main", "l2", { runId: "l2", success: false, messages: [{ role: "user" }] }, { outcome: "error", failureKind: "timeout", runId: "l1" }, "interrupted"],
    ] as const;
    for (const [sessionKey, runId, event, call, outcome] of real) {
      await runtime.runFor(sessionKey);
      if (call) await f.hook("model_call_ended")({ runId, callId: `${runId}:model:1`, sessionKey, ...call }, { sessionKey, runId });
      await f.hook("agent_end")(event, { sessionKey, runId });
      expect(await lastTurn(sessionKey), sessionKey).toMatchObject({ outcome });
    }
    expect(await lastTurn("agent:flaky:main")).toMatchObject({ outcome: "error", error: "500 provider error" });
    await other.close();
    await runtime.stop();
  });

  it("never reports a configuration or authorization error as the bus being unreachable", async () => {
    const quiet = { info: () => undefined, warn: () => undefined, error: () => undefined };
    // Not connected: only connection trouble is rephrased as "unreachable right now".
    const runtime = new MeshRuntime(PluginConfigSchema.parse({ instance: "gw1", servers: "nats://127.0.0.1:1" }), quiet);
    const refusals = [
      new ValidationError("send", [{ path: "message", message: "too long" }]),
      new TopologyConflictError("stream X", "max_bytes", 1, 2),
      new NotProvisionedError("stream X", undefined),
      new MeshMisconfiguredError("not_permitted", "the NATS server refused this gateway's credentials"),
    ];
    for (const err of refusals) expect(runtime.explain(err), err.code).toBe(err);
    expect(runtime.explain(new SendFailedError("m1", new Error("no ack")))).toBeInstanceOf(MeshUnavailableError);

    // A mesh the gateway cannot use as configured: its instance's streams exist with other limits.
    const prefix = uniquePrefix();
    const existing = await openMesh(server, { prefix, instance: "gw1", retention: { maxAgeMs: 3_600_000 } });
    await existing.close();
    const f = fakeApi({ instance: "gw1", servers: server.url, prefix });
    const gw = registerClawmesh(f.api)!;
    await f.services[0]!.start({});
    expect(f.logs.some((l) => /^error clawmesh: NATS at .* refused this gateway or the mesh is misconfigured \(topology_conflict\)/.test(l))).toBe(true);
    const send = f.tools.get("mesh_send")!({ sessionKey: "agent:main:main" })!;
    const failed = await send.execute("c1", { agentId: "x", message: "hi" }).catch((e: unknown) => e);
    expect(failed).toBeInstanceOf(MeshMisconfiguredError);
    expect(failed).toMatchObject({ code: "topology_conflict" });
    expect((failed as Error).message).toContain("trying again will not help");
    expect((failed as Error).message).not.toMatch(/unreachable right now|try again shortly/);
    await gw.stop();
  });

  it("gives the model a clear error when NATS is down, and keeps going", async () => {
    const f = fakeApi({ instance: "gw1", servers: "nats://127.0.0.1:1", prefix: uniquePrefix() });
    const runtime = registerClawmesh(f.api)!;
    await f.services[0]!.start({});
    expect(f.logs.some((l) => l.startsWith("error clawmesh: cannot reach NATS at"))).toBe(true);
    const send = f.tools.get("mesh_send")!({ sessionKey: "agent:main:main" })!;
    await expect(send.execute("c1", { agentId: "x", message: "hi" })).rejects.toThrow(/clawmesh message bus is unreachable right now/);
    expect(await f.hook("before_prompt_build")({}, { sessionKey: "agent:main:main" })).toBeUndefined();
    await runtime.stop();
  });
});
