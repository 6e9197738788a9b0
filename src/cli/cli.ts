/**
 * The `clawmesh` command, as a function: `run(argv, io)` returns the exit code (0 ok, 1 runtime
 * failure, 2 usage error, 3 not found) and writes through `io`, so it runs in-process as well as
 * from `main.ts`. Read commands print a table by default and one JSON document with `--json`.
 * Errors are one line, `clawmesh: <code>: <message>`, never a stack trace.
 */
import { parseArgs } from "node:util";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { generateAuthorization, type AuthSpec } from "../topology/index.js";
import { Mesh } from "../mesh.js";
import type { MeshAuth } from "../transport/credentials.js";
import { isBusUnreachable, isNotFound, isNotPermitted } from "../transport/js-errors.js";
import { MeshError } from "../errors.js";
import { sessionKeyOf, type SessionAddress } from "../address/index.js";
import { LocalNatsServer } from "../server/local-server.js";
import { TERMINAL_STATES, TaskStateSchema, type SessionRecord, type TaskRecord } from "../wire/index.js";
import type { PendingMessage } from "../inbox/index.js";
import { startUi } from "../ui/server.js";
import { STATE_DIR, clearRunning, processAlive, readRunning, writeRunning } from "./state.js";

export interface CliIo {
  out(line: string): void;
  err(line: string): void;
}

export const processIo: CliIo = {
  out: (line) => void process.stdout.write(`${line}\n`),
  err: (line) => void process.stderr.write(`${line}\n`),
};

export const ExitCodes = { ok: 0, failure: 1, usage: 2, notFound: 3 } as const;

const DEFAULT_PORT = 4333;
const DEFAULT_UI_PORT = 4380;

const common = {
  server: { type: "string" },
  instance: { type: "string" },
  prefix: { type: "string" },
  port: { type: "string" },
  store: { type: "string" },
  to: { type: "string" },
  "to-instance": { type: "string" },
  from: { type: "string" },
  message: { type: "string" },
  kind: { type: "string" },
  session: { type: "string" },
  max: { type: "string" },
  "no-confirm": { type: "boolean" },
  wait: { type: "string" },
  spec: { type: "string" },
  of: { type: "string" },
  all: { type: "boolean" },
  lifecycle: { type: "string" },
  pending: { type: "boolean" },
  state: { type: "string" },
  requester: { type: "string" },
  assignee: { type: "string" },
  stuck: { type: "boolean" },
  "older-than": { type: "string" },
  "dry-run": { type: "boolean" },
  bodies: { type: "boolean" },
  user: { type: "string" },
  password: { type: "string" },
  token: { type: "string" },
  nkey: { type: "string" },
  creds: { type: "string" },
  "tls-ca": { type: "string" },
  "tls-cert": { type: "string" },
  "tls-key": { type: "string" },
  "inbox-prefix": { type: "string" },
  host: { type: "string" },
  ui: { type: "boolean" },
  "ui-port": { type: "string" },
  "read-only": { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;
/** `send --json` takes the body; everywhere else `--json` asks for machine-readable output. */
const sendOptions = { ...common, json: { type: "string" } } as const;
const readOptions = { ...common, json: { type: "boolean" } } as const;

type Flags = Omit<ReturnType<typeof parseArgs<{ options: typeof readOptions; allowPositionals: true }>>["values"], "json"> & { json?: string | boolean };

export const USAGE = `usage: clawmesh <command> [flags]
  start [--port ${DEFAULT_PORT}] [--store .clawmesh/data] [--instance local] [--ui [--ui-port ${DEFAULT_UI_PORT}]]
  stop
  status [--wait SECONDS]
  provision INSTANCE...
  send --to SESSION_KEY [--to-instance ID] [--from SESSION_KEY] (--message TEXT | --json JSON) [--kind KIND]
  take --session SESSION_KEY [--max N] [--no-confirm]
  sessions [--of INSTANCE | --all] [--lifecycle active|idle|closed] [--pending]
  inbox SESSION_KEY [--of INSTANCE] [--max N]            (peek: confirms nothing)
  tasks [--state STATE|open] [--requester INSTANCE] [--assignee INSTANCE] [--stuck] [--all]
  orphans [--older-than 10m] [--of INSTANCE]
  redirect --from SESSION_KEY --to SESSION_KEY [--to-instance ID] [--kind KIND] [--dry-run]
  parked list [--session SESSION_KEY] | show SEQ | redrive SEQ... | drop SEQ...
  tail [--session SESSION_KEY] [--of INSTANCE] [--bodies]  (until Ctrl-C)
  ui [--port ${DEFAULT_UI_PORT}] [--host 127.0.0.1] [--read-only]   (live web view and /metrics, until Ctrl-C)
  auth --spec SPEC.json          (prints nats-server authorization for the instances)
read commands: --json prints one JSON document instead of a table
exit codes: 0 ok, 1 failure, 2 usage error, 3 not found
common: --server URL  --instance ID  --prefix PREFIX
credentials (or $CLAWMESH_USER/_PASSWORD/_TOKEN/_NKEY/_CREDS/_TLS_CA/_TLS_CERT/_TLS_KEY/_INBOX_PREFIX):
  --user U --password P | --token T | --nkey SEED_FILE | --creds FILE   [--tls-ca F --tls-cert F --tls-key F]  [--inbox-prefix P]`;

class UsageError extends MeshError {
  constructor(message: string) {
    super("usage", message);
  }
}

/** Credentials from flags, else the environment (never printed). */
function authFrom(flags: Flags): MeshAuth {
  const pick = (flag: string | undefined, env: string) => flag ?? process.env[`CLAWMESH_${env}`];
  const tls = { caFile: pick(flags["tls-ca"], "TLS_CA"), certFile: pick(flags["tls-cert"], "TLS_CERT"), keyFile: pick(flags["tls-key"], "TLS_KEY") };
  const defined = <T extends object>(o: T) => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
  const hasTls = Object.values(tls).some((v) => v !== undefined);
  return defined({
    user: pick(flags.user, "USER"),
    password: pick(flags.password, "PASSWORD"),
    token: pick(flags.token, "TOKEN"),
    nkeySeedFile: pick(flags.nkey, "NKEY"),
    credsFile: pick(flags.creds, "CREDS"),
    inboxPrefix: pick(flags["inbox-prefix"], "INBOX_PREFIX"),
    ...(hasTls && { tls: defined(tls) }),
  });
}

/** The code and exit status of an error, classified by class and code, never by message text. */
export function classify(err: unknown): { code: string; exit: number; message: string } {
  const message = err instanceof Error ? err.message.split("\n")[0]! : String(err);
  const nodeCode = (err as { code?: unknown } | undefined)?.code;
  if (typeof nodeCode === "string" && nodeCode.startsWith("ERR_PARSE_ARGS")) return { code: "usage", exit: ExitCodes.usage, message };
  if (err instanceof SyntaxError) return { code: "invalid_json", exit: ExitCodes.usage, message };
  if (isNotPermitted(err)) return { code: "not_permitted", exit: ExitCodes.failure, message: `the server refused this (${message}); these credentials may not read or write what was asked` };
  if (err instanceof MeshError) {
    if (err.code === "not_found") return { code: err.code, exit: ExitCodes.notFound, message };
    if (err.code === "usage" || err.code === "invalid_address" || err.code === "invalid_input") return { code: err.code, exit: ExitCodes.usage, message };
    return { code: err.code, exit: ExitCodes.failure, message };
  }
  if (isNotFound(err)) return { code: "not_found", exit: ExitCodes.notFound, message };
  if (isBusUnreachable(err)) return { code: "bus_unreachable", exit: ExitCodes.failure, message };
  return { code: "failed", exit: ExitCodes.failure, message };
}

export async function run(argv: readonly string[], io: CliIo = processIo, signal?: AbortSignal): Promise<number> {
  try {
    return await dispatch([...argv], io, signal);
  } catch (err) {
    const c = classify(err);
    io.err(`clawmesh: ${c.code}: ${c.message}`);
    return c.exit;
  }
}

async function dispatch(argv: string[], io: CliIo, signal: AbortSignal | undefined): Promise<number> {
  // Find the command first: it decides what `--json` means.
  const probe = parseArgs({ args: argv, options: readOptions, allowPositionals: true, strict: false });
  const isSend = probe.positionals[0] === "send";
  const { values, positionals } = parseArgs({ args: argv, options: isSend ? sendOptions : readOptions, allowPositionals: true, strict: true });
  const flags = values as Flags;
  const [command, ...rest] = positionals;
  if (flags.help || !command) {
    (command || flags.help ? io.out : io.err)(USAGE);
    return command || flags.help ? ExitCodes.ok : ExitCodes.usage;
  }
  const handler = COMMANDS[command];
  if (!handler) throw new UsageError(`unknown command '${command}' (clawmesh --help lists them)`);
  return handler({ flags, rest, json: flags.json === true, io, signal });
}

interface CommandContext {
  readonly flags: Flags;
  readonly rest: string[];
  readonly json: boolean;
  readonly io: CliIo;
  readonly signal: AbortSignal | undefined;
}

/** Every command, by name: one function each. */
const COMMANDS: Record<string, (c: CommandContext) => Promise<number>> = {
  start: ({ flags, io }) => start(flags, io),
  stop: ({ io }) => stop(io),
  status: ({ flags, io }) => status(flags, io),
  auth: async ({ flags, io }) => {
    if (!flags.spec) throw new UsageError("auth needs --spec SPEC.json");
    io.out(generateAuthorization(JSON.parse(readFileSync(flags.spec, "utf8")) as AuthSpec).replace(/\n$/, ""));
    return ExitCodes.ok;
  },
  provision: ({ flags, rest, io }) =>
    withMesh(flags, async (mesh) => {
      const instances = rest.length > 0 ? rest : [mesh.instance];
      for (const instance of instances) await mesh.admin.provision(instance);
      io.out(`provisioned: ${instances.join(", ")}`);
    }),
  send: ({ flags, io }) => send(flags, io),
  take: ({ flags, io }) => take(flags, io),
  sessions: ({ flags, json, io }) => withMesh(flags, (mesh) => sessions(mesh, flags, json, io)),
  inbox: ({ flags, rest, json, io }) => inbox(flags, rest, json, io),
  tasks: ({ flags, json, io }) => withMesh(flags, (mesh) => tasks(mesh, flags, json, io)),
  orphans: ({ flags, json, io }) => withMesh(flags, (mesh) => orphans(mesh, flags, json, io)),
  redirect: ({ flags, json, io }) => redirect(flags, json, io),
  parked: ({ flags, rest, json, io }) => parked(flags, rest, json, io),
  tail: ({ flags, io, signal }) => tail(flags, io, signal),
  ui: ({ flags, io, signal }) => ui(flags, io, signal),
};

function portFlag(v: string | undefined, name: string, dflt: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new UsageError(`--${name} must be a port number (0-65535)`);
  return n;
}

/** Resolves on the signal, or on Ctrl-C / SIGTERM when there is none. */
function untilStopped(signal: AbortSignal | undefined): Promise<void> {
  return new Promise<void>((resolve) => {
    if (signal?.aborted) return resolve();
    signal?.addEventListener("abort", () => resolve(), { once: true });
    if (!signal) {
      process.once("SIGINT", () => resolve());
      process.once("SIGTERM", () => resolve());
    }
  });
}

async function ui(flags: Flags, io: CliIo, signal: AbortSignal | undefined): Promise<number> {
  const port = portFlag(flags.port, "port", DEFAULT_UI_PORT);
  return withMesh(flags, async (mesh) => {
    const server = await startUi({ mesh, port, host: flags.host ?? "127.0.0.1", readOnly: flags["read-only"] === true });
    try {
      io.out(`clawmesh ui at ${server.url} (${server.access}); /metrics for Prometheus; Ctrl-C stops`);
      await untilStopped(signal);
    } finally {
      await server.close();
    }
  });
}

function send(flags: Flags, io: CliIo): Promise<number> {
  if (!flags.to) throw new UsageError("send needs --to SESSION_KEY");
  const body = typeof flags.json === "string" ? (JSON.parse(flags.json) as never) : (flags.message ?? "");
  return withMesh(flags, async (mesh) => {
    const r = await mesh.send({
      from: flags.from ?? "agent:cli:main",
      to: flags["to-instance"] ? { sessionKey: flags.to!, instance: flags["to-instance"] } : flags.to!,
      body,
      ...(flags.kind && { kind: flags.kind }),
    });
    io.out(JSON.stringify({ sent: r.id, seq: r.seq, stream: r.stream, duplicate: r.duplicate }));
  });
}

function take(flags: Flags, io: CliIo): Promise<number> {
  if (!flags.session) throw new UsageError("take needs --session SESSION_KEY");
  const max = intFlag(flags.max, "max", 100);
  return withMesh(flags, async (mesh) => {
    const reader = await mesh.sessions.openInbox(flags.session!);
    try {
      const batch = await reader.take({ max });
      for (const m of batch.messages) io.out(JSON.stringify({ id: m.id, kind: m.kind, from: m.from, sentAt: m.sentAt, body: m.body }));
      if (flags["no-confirm"]) await batch.release();
      else await batch.confirm();
      io.err(`${batch.messages.length} message(s)${flags["no-confirm"] ? " (not confirmed)" : " confirmed"}`);
    } finally {
      await reader.close();
    }
  });
}

function inbox(flags: Flags, rest: string[], json: boolean, io: CliIo): Promise<number> {
  const key = rest[0] ?? flags.session;
  if (!key) throw new UsageError("inbox needs a SESSION_KEY");
  const max = intFlag(flags.max, "max", 100);
  return withMesh(flags, async (mesh) => {
    const pending = await mesh.sessions.peek(ref(key, flags.of), { max });
    if (json) return io.out(JSON.stringify(pending.map(pendingJson)));
    if (pending.length === 0) return io.out("no pending messages");
    table(io, ["SEQ", "ID", "KIND", "FROM", "AGE", "BYTES", "BODY"], pending.map((p) => [String(p.seq), p.id ?? "-", p.kind, p.from ? addr(p.from) : "-", age(p.storedAt), String(p.size), p.unreadable ? `(unreadable: ${p.unreadable})` : preview(p.envelope?.body)]));
  });
}

function intFlag(v: string | undefined, name: string, dflt: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`--${name} must be a positive integer`);
  return n;
}

/** "10m", "30s", "2h", "1d" or seconds. */
export function parseDuration(v: string): number {
  const m = /^(\d+)(ms|s|m|h|d)?$/.exec(v.trim());
  if (!m) throw new UsageError(`'${v}' is not a duration (e.g. 90s, 10m, 2h, 1d)`);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[(m[2] ?? "s") as "s"];
  return Number(m[1]) * unit;
}

function ref(sessionKey: string, instance: string | undefined): string | { sessionKey: string; instance: string } {
  return instance ? { sessionKey, instance } : sessionKey;
}

function addr(a: { instance: string; agent: string; channel: string; session: string }): string {
  return `${a.instance}/${sessionKeyOf(a)}`;
}

function age(iso: string | undefined, now = Date.now()): string {
  if (!iso) return "-";
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  if (s < 172_800) return `${Math.round(s / 3600)}h`;
  return `${Math.round(s / 86_400)}d`;
}

function preview(body: unknown, max = 60): string {
  const text = typeof body === "string" ? body : JSON.stringify(body) ?? "";
  const flat = text.replace(/\s+/g, " ");
  return flat.length > max ? `${flat.slice(0, max - 1)}…` : flat;
}

function table(io: CliIo, header: string[], rows: string[][]): void {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (r: string[]) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join("  ").trimEnd();
  io.out(line(header));
  for (const r of rows) io.out(line(r));
}

function pendingJson(p: PendingMessage) {
  return {
    seq: p.seq,
    id: p.id ?? null,
    kind: p.kind,
    from: p.from ? addr(p.from) : null,
    sentAt: p.sentAt ?? null,
    storedAt: p.storedAt,
    size: p.size,
    ...(p.unreadable !== undefined && { unreadable: p.unreadable }),
    ...(p.envelope !== undefined && { body: p.envelope.body }),
  };
}

function serverUrl(flags: Flags): string {
  return flags.server ?? process.env.CLAWMESH_SERVERS ?? readRunning()?.url ?? "nats://127.0.0.1:4222";
}

async function connectMesh(flags: Flags): Promise<Mesh> {
  return Mesh.connect({
    servers: serverUrl(flags).split(","),
    instance: flags.instance ?? process.env.CLAWMESH_INSTANCE ?? readRunning()?.instance ?? "local",
    prefix: flags.prefix ?? process.env.CLAWMESH_PREFIX ?? readRunning()?.prefix ?? "mesh",
    // A one-shot call rides out a short server restart, then gives up: after about 10 s without a
    // server the connection closes and an unacknowledged send is reported (with its id).
    reconnect: { maxAttempts: 20, timeWaitMs: 500 },
    sendRetryMs: 10_000,
    auth: authFrom(flags),
    connection: { name: "clawmesh-cli" },
    // A one-shot command uses the streams as they are: it never provisions with its own defaults
    // (which could disagree with the instance's configuration), and under authorization it may not.
    provision: false,
  });
}

async function withMesh(flags: Flags, fn: (mesh: Mesh) => Promise<void>): Promise<number> {
  const mesh = await connectMesh(flags);
  try {
    await fn(mesh);
    return ExitCodes.ok;
  } finally {
    await mesh.close();
  }
}

interface SessionRow {
  readonly address: SessionAddress;
  readonly record?: SessionRecord;
}

/** Registered sessions of an instance plus those with stored messages but no registry record. */
async function sessionRows(mesh: Mesh, instance: string | undefined): Promise<SessionRow[]> {
  const records = await mesh.sessions.list(instance ? { instance } : {});
  const rows = new Map<string, SessionRow>(records.map((r) => [addr(r.address), { address: mesh.address({ sessionKey: r.sessionKey, instance: r.address.instance }), record: r }]));
  const instances = instance ? [instance] : await mesh.sessions.instances();
  for (const i of instances) for (const a of await mesh.sessions.withStored(i)) if (!rows.has(addr(a))) rows.set(addr(a), { address: a });
  return [...rows.values()];
}

function instanceScope(mesh: Mesh, flags: Flags): string | undefined {
  return flags.all ? undefined : (flags.of ?? mesh.instance);
}

async function sessions(mesh: Mesh, flags: Flags, json: boolean, io: CliIo): Promise<void> {
  if (flags.lifecycle && !["active", "idle", "closed", "unregistered"].includes(flags.lifecycle)) throw new UsageError("--lifecycle is one of active, idle, closed, unregistered");
  const out = [];
  for (const row of await sessionRows(mesh, instanceScope(mesh, flags))) {
    const lifecycle = row.record?.lifecycle ?? "unregistered";
    if (flags.lifecycle && lifecycle !== flags.lifecycle) continue;
    const p = await mesh.sessions.pending(row.address);
    if (flags.pending && p.count === 0) continue;
    out.push({
      session: addr(row.address),
      lifecycle,
      resumable: row.record?.resumable ?? null,
      lastTurn: row.record?.lastTurn ?? null,
      lastActivity: row.record?.lastActivity ?? null,
      pending: p.count,
      oldestPending: p.oldest ?? null,
      holder: row.record?.holder ?? null,
    });
  }
  if (json) return io.out(JSON.stringify(out));
  if (out.length === 0) return io.out("no sessions");
  table(
    io,
    ["SESSION", "LIFECYCLE", "RESUMABLE", "LAST TURN", "PENDING", "OLDEST", "HOLDER"],
    out.map((s) => [s.session, s.lifecycle, s.resumable === null ? "-" : String(s.resumable), s.lastTurn ? `${s.lastTurn.outcome} ${age(s.lastTurn.at)} ago` : "-", String(s.pending), s.oldestPending ? age(s.oldestPending) : "-", s.holder ?? "-"]),
  );
}

function isStuck(t: TaskRecord): boolean {
  return t.state === "input-required" || (TERMINAL_STATES.has(t.state) && !t.notified) || t.delivered === false;
}

async function tasks(mesh: Mesh, flags: Flags, json: boolean, io: CliIo): Promise<void> {
  const state = flags.state;
  if (state && state !== "open" && !TaskStateSchema.safeParse(state).success) throw new UsageError(`--state is 'open' or one of ${TaskStateSchema.options.join(", ")}`);
  const list = (await mesh.tasks.list({ ...(flags.requester && { requester: flags.requester }), ...(flags.assignee && { assignee: flags.assignee }), ...(flags.all && { all: true }) }))
    .filter((t) => !state || (state === "open" ? !TERMINAL_STATES.has(t.state) : t.state === state))
    .filter((t) => !flags.stuck || isStuck(t))
    .sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  const out = list.map((t) => ({
    taskId: t.taskId,
    state: t.state,
    requester: addr(t.requester),
    assignee: addr(t.assignee),
    createdAt: t.createdAt,
    updatedAt: t.updatedAt,
    notified: t.notified,
    delivered: t.delivered ?? true,
    stuck: isStuck(t),
    title: t.title ?? null,
  }));
  if (json) return io.out(JSON.stringify(out));
  if (out.length === 0) return io.out("no tasks");
  table(
    io,
    ["TASK", "STATE", "REQUESTER", "ASSIGNEE", "AGE", "NOTE", "TITLE"],
    out.map((t) => [t.taskId, t.state, t.requester, t.assignee, age(t.createdAt), !t.delivered ? "request not delivered" : TERMINAL_STATES.has(t.state as never) && !t.notified ? "decided, not notified" : t.state === "input-required" ? "needs input" : "-", preview(t.title ?? "", 40)]),
  );
}

async function orphans(mesh: Mesh, flags: Flags, json: boolean, io: CliIo): Promise<void> {
  const olderThan = parseDuration(flags["older-than"] ?? "10m");
  const cutoff = Date.now() - olderThan;
  const out = [];
  for (const row of await sessionRows(mesh, instanceScope(mesh, flags))) {
    const lifecycle = row.record?.lifecycle ?? "unregistered";
    if (lifecycle === "active") continue;
    for (const p of await mesh.sessions.peek(row.address)) {
      if (Date.parse(p.storedAt) > cutoff) continue;
      out.push({ session: addr(row.address), lifecycle, seq: p.seq, id: p.id ?? null, kind: p.kind, from: p.from ? addr(p.from) : null, storedAt: p.storedAt });
    }
  }
  if (json) return io.out(JSON.stringify(out));
  if (out.length === 0) return io.out("no orphaned messages");
  table(io, ["SESSION", "LIFECYCLE", "SEQ", "ID", "KIND", "FROM", "AGE"], out.map((o) => [o.session, o.lifecycle, String(o.seq), o.id ?? "-", o.kind, o.from ?? "-", age(o.storedAt)]));
}

async function redirect(flags: Flags, json: boolean, io: CliIo): Promise<number> {
  if (!flags.from || !flags.to) throw new UsageError("redirect needs --from SESSION_KEY and --to SESSION_KEY");
  const dryRun = flags["dry-run"] === true;
  return withMesh(flags, async (mesh) => {
    const r = await mesh.sessions.redirect(flags.from!, ref(flags.to!, flags["to-instance"]), {
      ...(flags.kind && { kind: flags.kind }),
      dryRun,
      label: `clawmesh redirect (pid ${process.pid})`,
      onMoved: (m, done, total) => {
        if (json) return;
        if (dryRun) io.out(`would move ${m.id} (${m.kind}, seq ${m.seq}) as ${m.newId}`);
        else if (done % 10 === 0 || done === total) io.out(`moved ${done}/${total}`);
      },
    });
    if (json) return io.out(JSON.stringify({ dryRun, moved: r.moved, skipped: r.skipped }));
    io.out(`${dryRun ? "would move" : "moved"} ${r.moved.length} message(s)${r.skipped ? `; ${r.skipped} left (other kinds or unreadable)` : ""}`);
  });
}

/** Where an interrupted `parked redrive` of many messages keeps its place. */
function cursorFile(): string {
  return join(STATE_DIR, "redrive-cursor.json");
}

/** Redrive parked messages; a long run keeps its place, so an interrupted redrive of the same list resumes after the last done. */
async function redriveMany(mesh: Mesh, seqs: readonly number[], json: boolean, io: CliIo): Promise<void> {
  const key = seqs.join(",");
  let start = 0;
  let resumed = false;
  try {
    const c = JSON.parse(readFileSync(cursorFile(), "utf8")) as { key?: string; done?: number };
    if (c.key === key && typeof c.done === "number") [start, resumed] = [c.done, true];
  } catch {
    // no cursor: start from the beginning
  }
  const record = (done: number) => {
    mkdirSync(STATE_DIR, { recursive: true });
    writeFileSync(cursorFile(), JSON.stringify({ key, done }));
  };
  if (seqs.length > 1) record(start);
  const results = [];
  for (let i = start; i < seqs.length; i++) {
    const seq = seqs[i]!;
    const done = await mesh.parked.redrive(seq).catch((err: unknown) => {
      // Resumed: the run that stopped may have redriven this one before recording it.
      if (i === start && resumed && err instanceof MeshError && err.code === "not_found") return undefined;
      throw err;
    });
    if (done) results.push({ parkedSeq: seq, ...done });
    if (seqs.length > 1) {
      record(i + 1);
      if (!json) io.out(`redriven ${i + 1}/${seqs.length}${done ? "" : ` (${seq} was already redriven)`}`);
    }
  }
  rmSync(cursorFile(), { force: true });
  if (json) return void io.out(JSON.stringify(results));
  if (seqs.length === 1) io.out(`redriven ${seqs[0]} to ${results[0]?.subject ?? "?"}`);
}

async function parked(flags: Flags, rest: string[], json: boolean, io: CliIo): Promise<number> {
  const [sub = "list", ...args] = rest;
  const seqs = args.map((a) => {
    const n = Number(a);
    if (!Number.isInteger(n) || n < 1) throw new UsageError(`'${a}' is not a parked sequence number`);
    return n;
  });
  if (sub !== "list" && seqs.length === 0) throw new UsageError(`parked ${sub} needs a parked sequence number`);
  return withMesh(flags, async (mesh) => {
    switch (sub) {
      case "list": {
        const list = await mesh.parked.list(flags.session);
        if (json) return io.out(JSON.stringify(list));
        if (list.length === 0) return io.out("no parked messages");
        table(io, ["SEQ", "SESSION", "REASON", "DELIVERIES", "PARKED", "BYTES", "DETAIL"], list.map((p) => [String(p.parkedSeq), p.sessionKey, p.reason, String(p.deliveries), age(p.parkedAt), String(p.size), preview(p.detail, 60)]));
        return;
      }
      case "show": {
        const shown = [];
        for (const seq of seqs) shown.push(await mesh.parked.show(seq));
        if (json) return io.out(JSON.stringify(shown.length === 1 ? shown[0] : shown));
        for (const d of shown) {
          io.out(`parked message ${d.parkedSeq} (${d.size} bytes)`);
          for (const [k, v] of Object.entries(d.headers)) io.out(`  ${k}: ${v}`);
          io.out(d.body.length > 2000 ? `${d.body.slice(0, 2000)}… (${d.body.length - 2000} more characters)` : d.body);
        }
        return;
      }
      case "redrive":
        return redriveMany(mesh, seqs, json, io);
      case "drop": {
        for (const seq of seqs) await mesh.parked.drop(seq);
        if (json) return io.out(JSON.stringify({ dropped: seqs }));
        io.out(`dropped ${seqs.length} parked message(s)`);
        return;
      }
      default:
        throw new UsageError(`unknown parked command '${sub}' (list, show, redrive, drop)`);
    }
  });
}

async function tail(flags: Flags, io: CliIo, signal: AbortSignal | undefined): Promise<number> {
  return withMesh(flags, async (mesh) => {
    const session = flags.session ? mesh.address(ref(flags.session, flags.of)) : undefined;
    const stop = mesh.sessions.tail({ instance: session?.instance ?? flags.of ?? mesh.instance, ...(session && { session }) }, (e) => {
      const head = `${e.at} ${e.kind} ${e.from} -> ${e.to} ${e.id}`;
      io.out(flags.bodies ? `${head} ${preview(e.body, 200)}` : head);
    });
    const stopped = new Promise<void>((resolve) => {
      if (signal?.aborted) return resolve();
      signal?.addEventListener("abort", () => resolve(), { once: true });
      if (!signal) {
        process.once("SIGINT", () => resolve());
        process.once("SIGTERM", () => resolve());
      }
    });
    try {
      // A refused subscription (permissions) ends the tail with its error.
      await Promise.race([stop.ready, stop.done]);
      io.err("tailing; Ctrl-C stops");
      await Promise.race([stopped, stop.done]);
    } finally {
      stop.close();
    }
  });
}

async function start(flags: Flags, io: CliIo): Promise<number> {
  const running = readRunning();
  if (running && processAlive(running.supervisorPid)) {
    io.out(`clawmesh is already running at ${running.url} (pid ${running.supervisorPid})`);
    return ExitCodes.ok;
  }
  const instance = flags.instance ?? process.env.CLAWMESH_INSTANCE ?? "local";
  const prefix = flags.prefix ?? process.env.CLAWMESH_PREFIX ?? "mesh";
  const storeDir = flags.store ?? join(STATE_DIR, "data");
  const port = flags.port ? Number(flags.port) : DEFAULT_PORT;
  const server = await LocalNatsServer.start({ storeDir, port });
  let stopping = false;
  let mesh: Mesh | undefined;
  let view: Awaited<ReturnType<typeof startUi>> | undefined;
  const shutdown = async () => {
    if (stopping) return;
    stopping = true;
    await view?.close().catch(() => undefined);
    await mesh?.close().catch(() => undefined);
    await server.stop();
    clearRunning();
    io.out("clawmesh stopped");
    process.exit(0);
  };
  process.on("SIGINT", () => void shutdown());
  process.on("SIGTERM", () => void shutdown());
  // The embedded mesh is a long-lived host of its instance: it runs the janitor.
  mesh = await Mesh.connect({ servers: server.url, instance, prefix, janitor: true });
  // The embedded server has no authorization: the view is the operator's.
  view = flags.ui ? await startUi({ mesh, port: portFlag(flags["ui-port"], "ui-port", DEFAULT_UI_PORT), host: flags.host ?? "127.0.0.1" }) : undefined;
  writeRunning({ url: server.url, serverPid: server.pid!, supervisorPid: process.pid, storeDir, version: server.version, instance, prefix });
  io.out(`clawmesh ready at ${server.url} (nats-server ${server.version}, store ${storeDir}, instance ${instance})${view ? `, ui at ${view.url}` : ""}; Ctrl-C or 'npm stop' stops it`);
  await new Promise(() => {});
  return ExitCodes.ok;
}

async function stop(io: CliIo): Promise<number> {
  const running = readRunning();
  if (!running || !processAlive(running.supervisorPid)) {
    clearRunning();
    io.out("clawmesh is not running");
    return ExitCodes.ok;
  }
  process.kill(running.supervisorPid, "SIGTERM");
  const deadline = Date.now() + 15_000;
  while (processAlive(running.supervisorPid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  if (processAlive(running.supervisorPid)) {
    io.err(`clawmesh: timeout: clawmesh (pid ${running.supervisorPid}) did not stop in 15 s`);
    return ExitCodes.failure;
  }
  io.out("clawmesh stopped");
  return ExitCodes.ok;
}

async function status(flags: Flags, io: CliIo): Promise<number> {
  const deadline = Date.now() + Number(flags.wait ?? 0) * 1000;
  for (;;) {
    const running = readRunning();
    if (running && processAlive(running.supervisorPid)) {
      io.out(JSON.stringify(running));
      return ExitCodes.ok;
    }
    if (Date.now() >= deadline) {
      io.err("clawmesh: not_running: clawmesh is not running (start it with: npm start)");
      return ExitCodes.failure;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}
