/**
 * A nats-server child process with JetStream on loopback: the embedded default behind
 * `clawmesh start`, and the server the test harness starts per test file. It is killed and
 * restarted on the same store dir and port to test crash recovery.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { accessSync, constants, mkdirSync } from "node:fs";
import { delimiter, join } from "node:path";
import { MeshError } from "../errors.js";

export interface LocalServerOptions {
  /** Path to nats-server; default: $NATS_SERVER_BIN, then PATH, then /usr/sbin/nats-server. */
  readonly binary?: string;
  /** JetStream store directory (created if missing). */
  readonly storeDir: string;
  /** Client port; 0 picks a free one. */
  readonly port?: number;
  readonly host?: string;
  /** A nats-server config file (cluster, authorization...). */
  readonly configFile?: string;
  readonly extraArgs?: readonly string[];
  /** Extra environment (a config file can read `$VARS` from it). */
  readonly env?: Readonly<Record<string, string>>;
  /** Take address, port and store from the config file instead of flags. */
  readonly configOnly?: boolean;
  /** How long to wait for "Server is ready" (default 20 s). */
  readonly readyTimeoutMs?: number;
}

export class NatsServerNotFoundError extends MeshError {
  constructor() {
    super(
      "nats_server_missing",
      [
        "nats-server was not found (looked at $NATS_SERVER_BIN, PATH and /usr/sbin/nats-server). Install it with one of:",
        "  Debian/Ubuntu:  sudo apt-get install nats-server",
        "  macOS:          brew install nats-server",
        "  Docker:         docker compose up -d   (then point clawmesh at nats://127.0.0.1:4222)",
        "or set NATS_SERVER_BIN to its path.",
      ].join("\n"),
    );
  }
}

export function findNatsServer(explicit?: string): string {
  const candidates = [explicit, process.env.NATS_SERVER_BIN, ...(process.env.PATH ?? "").split(delimiter).map((d) => d && join(d, "nats-server")), "/usr/sbin/nats-server"];
  for (const c of candidates) {
    if (!c) continue;
    try {
      accessSync(c, constants.X_OK);
      return c;
    } catch {
      // not here; keep looking
    }
  }
  throw new NatsServerNotFoundError();
}

export class LocalNatsServer {
  private child: ChildProcess | undefined;
  private exited: Promise<number | null> = Promise.resolve(null);
  port = 0;
  version = "";
  private log: string[] = [];

  private constructor(private readonly opts: LocalServerOptions & { binary: string; host: string }) {}

  static async start(opts: LocalServerOptions): Promise<LocalNatsServer> {
    const server = new LocalNatsServer({ ...opts, binary: findNatsServer(opts.binary), host: opts.host ?? "127.0.0.1" });
    server.port = opts.port ?? 0;
    await server.launch();
    return server;
  }

  get url(): string {
    return `nats://${this.opts.host}:${this.port}`;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  get storeDir(): string {
    return this.opts.storeDir;
  }

  /** Recent log lines, for failure messages. */
  get recentLog(): string {
    return this.log.slice(-30).join("\n");
  }

  private async launch(): Promise<void> {
    mkdirSync(this.opts.storeDir, { recursive: true });
    const args = [
      ...(this.opts.configFile ? ["-c", this.opts.configFile] : []),
      ...(this.opts.configOnly ? [] : ["-a", this.opts.host, "-p", String(this.port === 0 ? -1 : this.port), "-js", "-sd", this.opts.storeDir]),
      ...(this.opts.extraArgs ?? []),
    ];
    const child = spawn(this.opts.binary, args, { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, ...this.opts.env } });
    this.child = child;
    this.log = [];
    this.exited = new Promise((resolve) => child.once("exit", (code) => resolve(code)));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill("SIGKILL");
        reject(new MeshError("nats_server_start", `nats-server did not become ready in time:\n${this.recentLog}`));
      }, this.opts.readyTimeoutMs ?? 20_000);
      let buffered = "";
      child.stderr?.setEncoding("utf8");
      child.stderr?.on("data", (chunk: string) => {
        buffered += chunk;
        const lines = buffered.split("\n");
        buffered = lines.pop() ?? "";
        for (const line of lines) {
          this.log.push(line);
          if (this.log.length > 200) this.log.shift();
          const v = /Version:\s+(\S+)/.exec(line);
          if (v) this.version = v[1]!;
          const p = /Listening for client connections on .*:(\d+)/.exec(line);
          if (p) this.port = Number(p[1]);
          if (line.includes("Server is ready")) {
            clearTimeout(timer);
            resolve();
          }
        }
      });
      child.once("error", (err) => {
        clearTimeout(timer);
        reject(err);
      });
      child.once("exit", (code) => {
        clearTimeout(timer);
        reject(new MeshError("nats_server_start", `nats-server exited with code ${code}:\n${this.recentLog}`));
      });
    });
  }

  /** SIGKILL: no shutdown, no flush beyond what the store already wrote. */
  async kill(): Promise<void> {
    await this.signal("SIGKILL");
  }

  /** Graceful shutdown. */
  async stop(): Promise<void> {
    await this.signal("SIGTERM");
  }

  /** Start again on the same store dir and port. */
  async restart(): Promise<void> {
    if (this.child && this.child.exitCode === null && this.child.signalCode === null) await this.kill();
    await this.launch();
  }

  private async signal(sig: NodeJS.Signals): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    child.kill(sig);
    await this.exited;
  }
}
