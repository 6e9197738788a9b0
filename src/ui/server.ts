/**
 * The operator's live view: a small node:http server on one mesh connection.
 *
 * - `GET /` the page; `GET /api/state` (and its parts `/api/instances`, `/api/sessions`,
 *   `/api/tasks`, `/api/parked`) as JSON; `GET /events` a server-sent event per envelope seen on
 *   the inbox tail (ids, kinds, addresses: never bodies); `GET /metrics` Prometheus text.
 * - `POST /api/parked/<instance>/<seq>/redrive` redrives a parked message. Actions need the
 *   operator: the view is read-only when the connection may not tail every inbox (an instance
 *   user may not, the operator user may, and so may anyone on a server without authorization),
 *   or when started with `readOnly`. A read-only view answers actions with 403.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { Mesh } from "../mesh.js";
import { sessionKeyOf, type SessionAddress } from "../address/index.js";
import { MeshError } from "../errors.js";
import { isNotFound, isNotPermitted } from "../transport/js-errors.js";
import { TERMINAL_STATES, Kinds, TaskStateSchema } from "../wire/index.js";
import type { Tail, TailEvent } from "../inbox/index.js";
import { Histogram, renderMetrics } from "./metrics.js";
import { PAGE } from "./page.js";

export interface UiOptions {
  readonly mesh: Mesh;
  /** Default 4380; 0 picks a free port. */
  readonly port?: number;
  /** Default 127.0.0.1. */
  readonly host?: string;
  /** Refuse actions even with the operator's credentials. */
  readonly readOnly?: boolean;
}

export type UiAccess = "operator" | "read-only";

export interface UiServer {
  readonly url: string;
  readonly port: number;
  readonly access: UiAccess;
  /** Why the view is read-only, for the page. */
  readonly accessReason: string;
  close(): Promise<void>;
}

/** An instance counts as online when one of its sessions is active or was active this recently. */
export const ONLINE_WITHIN_MS = 5 * 60_000;

interface SessionView {
  session: string;
  instance: string;
  lifecycle: string;
  lastActivity: string | null;
  pending: number;
  oldestPending: string | null;
}

interface Snapshot {
  generatedAt: string;
  self: string;
  access: UiAccess;
  accessReason: string;
  onlineMeans: string;
  instances: { instance: string; online: boolean; sessions: number; pending: number; oldestPending: string | null; parked: number; error?: string }[];
  sessions: SessionView[];
  tasks: { taskId: string; state: string; requester: string; assignee: string; createdAt: string; title: string | null }[];
  fanIn: { requester: string; finished: number; total: number }[];
  tasksByState: Record<string, number>;
  parked: { instance: string; parkedSeq: number; sessionKey: string; reason: string; deliveries: number; parkedAt: string; size: number }[];
  notificationsPending: number;
  errors: string[];
}

const addr = (a: SessionAddress | { instance: string; agent: string; channel: string; session: string }) => `${a.instance}/${sessionKeyOf(a)}`;

function errorText(err: unknown): string {
  const message = err instanceof Error ? err.message.split("\n")[0]! : String(err);
  if (isNotPermitted(err)) return `not_permitted: ${message}`;
  if (err instanceof MeshError) return `${err.code}: ${message}`;
  return message;
}

export async function startUi(opts: UiOptions): Promise<UiServer> {
  const view = new OperatorView(opts);
  await view.decideAccess();
  return view.listen();
}

/** One running view: what it follows, who may act, and its HTTP handlers. */
class OperatorView {
  private readonly mesh: Mesh;
  private readonly pingback = new Histogram();
  private readonly clients = new Set<ServerResponse>();
  private readonly tails = new Map<string, Tail>();
  private access: UiAccess = "operator";
  private accessReason = "started with credentials that may watch every inbox (the operator's, or a server without authorization): redrive is enabled";

  constructor(private readonly opts: UiOptions) {
    this.mesh = opts.mesh;
  }

  /** Operator unless told read-only or the credentials may not watch inboxes. */
  async decideAccess(): Promise<void> {
    if (this.opts.readOnly) {
      this.access = "read-only";
      this.accessReason = "started read-only (--read-only): actions are refused";
    } else if (!(await this.follow(this.mesh.instance))) {
      this.access = "read-only";
      this.accessReason = `started with instance '${this.mesh.instance}''s credentials, which may not watch inboxes: a read-only view of what they may read; redrive needs the operator's credentials`;
    }
  }

  private readonly onEvent = (e: TailEvent): void => {
    if (e.kind === Kinds.taskComplete) {
      const sent = Date.parse(e.sentAt);
      if (Number.isFinite(sent)) this.pingback.observe((Date.parse(e.at) - sent) / 1000);
    }
    const line = `event: envelope\ndata: ${JSON.stringify({ at: e.at, kind: e.kind, id: e.id, from: e.from, to: e.to })}\n\n`;
    for (const c of this.clients) c.write(line);
  };

  /** Tail an instance's inboxes; false when the server refuses (instance users may not). */
  private async follow(instance: string): Promise<boolean> {
    if (this.tails.has(instance)) return true;
    const t = this.mesh.sessions.tail({ instance }, this.onEvent);
    this.tails.set(instance, t);
    const refused = t.done.then(
      () => false,
      () => true,
    );
    // A refusal arrives before the answer to a later request: one more round trip settles it.
    const settled = t.ready.then(() => this.mesh.sessions.instances().catch(() => [])).then(() => false);
    if (await Promise.race([refused, settled])) {
      this.tails.delete(instance);
      t.close();
      return false;
    }
    void refused.then((r) => r && this.tails.delete(instance));
    return true;
  }

  private async snapshot(): Promise<Snapshot> {
    const errors: string[] = [];
    const now = Date.now();
    let instances: string[];
    try {
      instances = await this.mesh.sessions.instances();
      if (instances.length === 0) instances = [this.mesh.instance];
    } catch (err) {
      errors.push(`instances: ${errorText(err)}`);
      instances = [this.mesh.instance];
    }
    // A read-only view shows what its own instance may read.
    if (this.access === "read-only") instances = instances.filter((i) => i === this.mesh.instance);
    const view: Snapshot = {
      generatedAt: new Date(now).toISOString(),
      self: this.mesh.instance,
      access: this.access,
      accessReason: this.accessReason,
      onlineMeans: `has an active session, or a session active in the last ${ONLINE_WITHIN_MS / 60_000} minutes`,
      instances: [],
      sessions: [],
      tasks: [],
      fanIn: [],
      tasksByState: Object.fromEntries(TaskStateSchema.options.map((s) => [s, 0])),
      parked: [],
      notificationsPending: this.mesh.tasks.pendingNotifications().length,
      errors,
    };
    for (const instance of instances) await this.addInstance(view, instance, now);
    await this.addTasks(view);
    return view;
  }

  /** One instance's row, its sessions and its parked messages. */
  private async addInstance(view: Snapshot, instance: string, now: number): Promise<void> {
    if (this.access === "operator") await this.follow(instance);
    const row: Snapshot["instances"][number] = { instance, online: false, sessions: 0, pending: 0, oldestPending: null, parked: 0 };
    view.instances.push(row);
    try {
      const records = await this.mesh.sessions.list({ instance });
      const rows = new Map<string, { address: SessionAddress; lifecycle: string; lastActivity: string | null }>();
      for (const r of records) rows.set(addr(r.address), { address: this.mesh.address({ sessionKey: r.sessionKey, instance: r.address.instance }), lifecycle: r.lifecycle, lastActivity: r.lastActivity });
      for (const a of await this.mesh.sessions.withStored(instance)) if (!rows.has(addr(a))) rows.set(addr(a), { address: a, lifecycle: "unregistered", lastActivity: null });
      for (const r of rows.values()) {
        const p = await this.mesh.sessions.pending(r.address);
        view.sessions.push({ session: addr(r.address), instance, lifecycle: r.lifecycle, lastActivity: r.lastActivity, pending: p.count, oldestPending: p.oldest ?? null });
        row.sessions++;
        row.pending += p.count;
        if (p.oldest && (!row.oldestPending || p.oldest < row.oldestPending)) row.oldestPending = p.oldest;
        if (r.lifecycle === "active" || (r.lastActivity && now - Date.parse(r.lastActivity) < ONLINE_WITHIN_MS)) row.online = true;
      }
      for (const p of await this.mesh.parked.list(undefined, { instance })) {
        view.parked.push({ instance, parkedSeq: p.parkedSeq, sessionKey: p.sessionKey, reason: p.reason, deliveries: p.deliveries, parkedAt: p.parkedAt, size: p.size });
        row.parked++;
      }
    } catch (err) {
      row.error = errorText(err);
    }
  }

  /** Tasks in flight and fan-in progress per requester session. */
  private async addTasks(view: Snapshot): Promise<void> {
    const errors = view.errors;
    try {
      const all = await this.mesh.tasks.list(this.access === "read-only" ? { requester: this.mesh.instance } : { all: true });
      const groups = new Map<string, { finished: number; total: number; open: boolean }>();
      for (const t of all.sort((a, b) => a.createdAt.localeCompare(b.createdAt))) {
        view.tasksByState[t.state] = (view.tasksByState[t.state] ?? 0) + 1;
        const done = TERMINAL_STATES.has(t.state);
        const g = groups.get(addr(t.requester)) ?? { finished: 0, total: 0, open: false };
        g.total++;
        if (done) g.finished++;
        else g.open = true;
        groups.set(addr(t.requester), g);
        if (!done) view.tasks.push({ taskId: t.taskId, state: t.state, requester: addr(t.requester), assignee: addr(t.assignee), createdAt: t.createdAt, title: t.title ?? null });
      }
      for (const [requester, g] of groups) if (g.open) view.fanIn.push({ requester, finished: g.finished, total: g.total });
    } catch (err) {
      errors.push(`tasks: ${errorText(err)}`);
    }
  }

  private async redrive(req: IncomingMessage, res: ServerResponse, instance: string, seq: number): Promise<void> {
    if (this.access !== "operator") return json(res, 403, { error: "read_only", message: `this view is read-only: ${this.accessReason}` });
    // A header a cross-site form cannot send: actions come from this page (or a deliberate client).
    if (req.headers["x-clawmesh-action"] !== "1") return json(res, 403, { error: "forbidden", message: "actions need the X-Clawmesh-Action: 1 header" });
    try {
      const done = await this.mesh.parked.redrive(seq, { instance });
      json(res, 200, { redriven: seq, instance, ...done });
    } catch (err) {
      if ((err instanceof MeshError && err.code === "not_found") || isNotFound(err)) return json(res, 404, { error: "not_found", message: `no parked message ${seq} on ${instance} (already redriven or dropped?)` });
      if (isNotPermitted(err)) return json(res, 403, { error: "not_permitted", message: errorText(err) });
      json(res, 500, { error: "failed", message: errorText(err) });
    }
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://ui");
    const path = url.pathname;
    if (req.method === "GET" && path === "/") {
      res.writeHead(200, { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" });
      return void res.end(PAGE);
    }
    if (req.method === "GET" && path === "/events") {
      res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-store", connection: "keep-alive" });
      // Registered before hello: every envelope seen after the client reads hello is sent to it.
      this.clients.add(res);
      res.write(`event: hello\ndata: ${JSON.stringify({ access: this.access, tailing: [...this.tails.keys()] })}\n\n`);
      req.on("close", () => this.clients.delete(res));
      return;
    }
    if (req.method === "GET" && path === "/metrics") {
      const s = await this.snapshot();
      const now = Date.parse(s.generatedAt);
      res.writeHead(200, { "content-type": "text/plain; version=0.0.4; charset=utf-8" });
      return void res.end(
        renderMetrics({
          instances: s.instances.map((i) => ({ instance: i.instance, pending: i.pending, parked: i.parked, oldestPendingAgeSeconds: i.oldestPending ? Math.max(0, (now - Date.parse(i.oldestPending)) / 1000) : 0 })),
          tasksByState: s.tasksByState,
          notificationsPending: s.notificationsPending,
          pingback: this.pingback,
        }),
      );
    }
    const parts = /^\/api\/(state|instances|sessions|tasks|parked)$/.exec(path);
    if (req.method === "GET" && parts) {
      const s = await this.snapshot();
      const part = parts[1] as "state" | "instances" | "sessions" | "tasks" | "parked";
      return json(res, 200, part === "state" ? s : part === "tasks" ? { tasks: s.tasks, fanIn: s.fanIn, tasksByState: s.tasksByState } : s[part]);
    }
    const action = /^\/api\/parked\/([^/]+)\/(\d+)\/redrive$/.exec(path);
    if (action) {
      if (req.method !== "POST") return json(res, 405, { error: "method_not_allowed", message: "redrive is a POST" });
      return this.redrive(req, res, decodeURIComponent(action[1]!), Number(action[2]));
    }
    json(res, 404, { error: "not_found", message: `no ${req.method} ${path}` });
  }

  async listen(): Promise<UiServer> {
    const server: Server = createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        if (!res.headersSent) json(res, 500, { error: "failed", message: errorText(err) });
        else res.end();
      });
    });
    const host = this.opts.host ?? "127.0.0.1";
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.opts.port ?? 4380, host, () => resolve());
    });
    const port = (server.address() as AddressInfo).port;
    return {
      url: `http://${host.includes(":") ? `[${host}]` : host}:${port}`,
      port,
      access: this.access,
      accessReason: this.accessReason,
      close: () => this.close(server),
    };
  }

  private async close(server: Server): Promise<void> {
    for (const t of this.tails.values()) t.close();
    this.tails.clear();
    for (const c of this.clients) c.end();
    this.clients.clear();
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeAllConnections();
    await closed;
  }
}

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { "content-type": "application/json; charset=utf-8", "cache-control": "no-store" });
  res.end(JSON.stringify(body));
}
