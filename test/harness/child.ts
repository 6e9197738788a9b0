/** Run test/fixtures/session-process.ts as a real child process and talk to it over IPC. */
import { fork, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import type { Command, Event } from "../fixtures/session-process.js";
import { smallRetention } from "./mesh.js";

const script = fileURLToPath(new URL("../fixtures/session-process.ts", import.meta.url));

export interface ChildOptions {
  url: string;
  prefix: string;
  instance: string;
  sessionKey?: string;
  inbox?: Record<string, number>;
  retention?: Record<string, number>;
  tasks?: Record<string, number>;
  /** The instance's own credentials, for a server running the generated authorization. */
  auth?: { user: string; password: string };
}

export class SessionProcess {
  private readonly queue: Event[] = [];
  private waiters: ((e: Event) => void)[] = [];
  private readonly exited: Promise<void>;

  private constructor(private readonly child: ChildProcess) {
    child.on("message", (m) => {
      const e = m as Event;
      const w = this.waiters.shift();
      if (w) w(e);
      else this.queue.push(e);
    });
    this.exited = new Promise((resolve) => child.once("exit", () => resolve()));
  }

  static async start(opts: ChildOptions): Promise<SessionProcess> {
    const child = fork(script, [], {
      execArgv: ["--import", "tsx"],
      env: { ...process.env, CLAWMESH_CHILD: JSON.stringify({ retention: smallRetention, ...opts }) },
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    const p = new SessionProcess(child);
    await p.expect("ready");
    return p;
  }

  get pid(): number {
    return this.child.pid!;
  }

  /** The next event, whatever its kind. */
  async next(what = "an event"): Promise<Event> {
    return (
      this.queue.shift() ??
      (await new Promise<Event>((resolve, reject) => {
        this.waiters.push(resolve);
        void this.exited.then(() => reject(new Error(`child ${this.child.pid} exited while waiting for ${what}`)));
      }))
    );
  }

  /** The next event; fails the test if it is not of the expected kind. */
  async expect<K extends Event["ev"]>(kind: K): Promise<Extract<Event, { ev: K }>> {
    const e = await this.next(`'${kind}'`);
    if (e.ev !== kind) throw new Error(`expected '${kind}' from child, got ${JSON.stringify(e)}`);
    return e as Extract<Event, { ev: K }>;
  }

  send(cmd: Command): void {
    this.child.send(cmd);
  }

  async sigkill(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill("SIGKILL");
    await this.exited;
  }

  async close(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.send({ op: "close" });
    await this.exited;
  }
}
