import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { run, type CliIo } from "../src/cli/cli.js";
import { STATE_DIR } from "../src/cli/state.js";
import { Mesh } from "../src/index.js";
import { OPERATOR, passwordOf, startSecuredMesh, type SecuredMesh } from "./harness/secured.js";
import { ReservedIds } from "../src/wire/index.js";
import { useServer } from "./harness/suite.js";
import { inspect, uniquePrefix } from "./harness/mesh.js";

// The CLI's state dir (the redrive cursor) for this file only.
vi.hoisted(() => {
  process.env.CLAWMESH_HOME = `${process.env.TMPDIR ?? "/tmp"}/clawmesh-cli-test-${process.pid}`;
});

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");

interface Ran {
  code: number;
  out: string[];
  err: string[];
}

async function cli(argv: string[], signal?: AbortSignal, onLine?: (line: string) => void): Promise<Ran> {
  const out: string[] = [];
  const err: string[] = [];
  const io: CliIo = {
    out: (l) => {
      out.push(l);
      onLine?.(l);
    },
    err: (l) => {
      err.push(l);
      onLine?.(l);
    },
  };
  const code = await run(argv, io, signal);
  return { code, out, err };
}

/** Take everything a session has, confirming; the ids shown. */
async function takeAll(mesh: Mesh, session: string): Promise<string[]> {
  const inbox = await mesh.sessions.openInbox(session);
  const ids: string[] = [];
  try {
    for (;;) {
      const batch = await inbox.take({ max: 1000 });
      ids.push(...batch.messages.map((m) => m.id));
      await batch.confirm();
      if (batch.messages.length === 0 && !batch.more) return ids;
    }
  } finally {
    await inbox.close();
  }
}

describe("clawmesh command line", () => {
  const suite = useServer();
  let prefix: string;
  let mesh: Mesh;
  const conn = () => ["--server", suite.server.url, "--prefix", prefix, "--instance", "gw1"];

  beforeAll(async () => {
    prefix = uniquePrefix();
    mesh = await suite.mesh(prefix, "gw1");
    suite.cleanup(async () => rmSync(STATE_DIR, { recursive: true, force: true }));
  });

  it("reports a bad argument as one line with a code and exit 2, never a stack trace", async () => {
    const bad = await cli(["send", ...conn(), "--to", "agent:x:main", "--json", "{bad"]);
    expect(bad.code).toBe(2);
    expect(bad.err).toHaveLength(1);
    expect(bad.err[0]).toMatch(/^clawmesh: invalid_json: /);
    const unknown = await cli(["frobnicate"]);
    expect(unknown.code).toBe(2);
    expect(unknown.err[0]).toMatch(/^clawmesh: usage: /);
    const flag = await cli(["sessions", "--no-such-flag"]);
    expect(flag.code).toBe(2);
    expect(flag.err[0]).toMatch(/^clawmesh: usage: /);
  });

  it("says so when nothing is parked, in words and as []; a missing parked message exits 3", async () => {
    expect((await cli(["parked", "list", ...conn()])).out).toEqual(["no parked messages"]);
    expect((await cli(["parked", "list", "--json", ...conn()])).out).toEqual(["[]"]);
    const missing = await cli(["parked", "show", "999999", ...conn()]);
    expect(missing.code).toBe(3);
    expect(missing.err[0]).toMatch(/^clawmesh: not_found: /);
  });

  it("keeps send and take as the smoke test uses them", async () => {
    const sent = await cli(["send", ...conn(), "--to", "agent:ci:main", "--message", "hello from ci"]);
    expect(sent.code).toBe(0);
    expect(JSON.parse(sent.out[0]!)).toMatchObject({ duplicate: false });
    const taken = await cli(["take", ...conn(), "--session", "agent:ci:main"]);
    expect(taken.code).toBe(0);
    expect(taken.out.join("\n")).toContain('"body":"hello from ci"');
  });

  it("lists sessions with pending counts and peeks an inbox without confirming anything", async () => {
    await mesh.send({ from: "agent:cli:main", to: "agent:peek:main", body: "first" });
    await mesh.send({ from: "agent:cli:main", to: "agent:peek:main", kind: "note", body: { n: 2 } });
    const listed = await cli(["sessions", "--json", "--pending", ...conn()]);
    expect(listed.code).toBe(0);
    const rows = JSON.parse(listed.out[0]!) as { session: string; pending: number; lifecycle: string; oldestPending: string | null }[];
    const peek = rows.find((r) => r.session === "gw1/agent:peek:main");
    expect(peek).toMatchObject({ pending: 2, lifecycle: "unregistered" });
    expect(peek?.oldestPending).toBeTruthy();
    const table = await cli(["sessions", ...conn()]);
    expect(table.out[0]).toMatch(/^SESSION\s+LIFECYCLE\s+RESUMABLE\s+LAST TURN\s+PENDING\s+OLDEST\s+HOLDER$/);

    const shown = await cli(["inbox", "agent:peek:main", "--json", ...conn()]);
    const pending = JSON.parse(shown.out[0]!) as { kind: string; body: unknown }[];
    expect(pending.map((p) => [p.kind, p.body])).toEqual([["msg", "first"], ["note", { n: 2 }]]);
    // Peeking confirmed nothing: the session's next take shows both, then nothing is pending.
    expect(await takeAll(mesh, "agent:peek:main")).toHaveLength(2);
    expect((await cli(["inbox", "agent:peek:main", ...conn()])).out).toEqual(["no pending messages"]);
  });

  it("lists tasks and finds the stuck ones", async () => {
    const boss = await mesh.sessions.open("agent:boss:main");
    const t = await boss.delegate({ to: mesh.address("agent:worker:main"), message: "do it" });
    await boss.close();
    const open = JSON.parse((await cli(["tasks", "--json", "--state", "open", ...conn()])).out[0]!) as { taskId: string; state: string }[];
    expect(open.map((x) => x.taskId)).toContain(t.taskId);
    expect((await cli(["tasks", "--json", "--stuck", ...conn()])).out).toEqual(["[]"]);
    expect((await cli(["tasks", "--stuck", ...conn()])).out).toEqual(["no tasks"]);

    const worker = await mesh.sessions.open("agent:worker:main");
    await worker.setTaskState(t.taskId, "input-required");
    await worker.close();
    const stuck = JSON.parse((await cli(["tasks", "--json", "--stuck", "--assignee", "gw1", ...conn()])).out[0]!) as { taskId: string; state: string; stuck: boolean }[];
    expect(stuck.map((x) => [x.taskId, x.state, x.stuck])).toEqual([[t.taskId, "input-required", true]]);
    const table = await cli(["tasks", "--stuck", ...conn()]);
    expect(table.out[0]).toMatch(/^TASK\s+STATE\s+REQUESTER\s+ASSIGNEE\s+AGE\s+NOTE\s+TITLE$/);
    expect(table.out[1]).toContain("needs input");
    expect((await cli(["tasks", "--json", "--requester", "elsewhere", ...conn()])).out).toEqual(["[]"]);
    expect((await cli(["tasks", "--state", "bogus", ...conn()])).code).toBe(2);
  });

  it("finds orphans older than a given age and redirects them, once, with a dry run first", async () => {
    for (let i = 0; i < 5; i++) await mesh.send({ from: "agent:cli:main", to: "agent:gone:main", kind: i % 2 ? "note" : "msg", body: `o${i}` });
    const fresh = JSON.parse((await cli(["orphans", "--json", "--older-than", "1h", ...conn()])).out[0]!) as unknown[];
    expect(fresh).toEqual([]);
    const all = JSON.parse((await cli(["orphans", "--json", "--older-than", "0s", ...conn()])).out[0]!) as { session: string }[];
    expect(all.filter((o) => o.session === "gw1/agent:gone:main")).toHaveLength(5);

    const dry = await cli(["redirect", "--from", "agent:gone:main", "--to", "agent:heir:main", "--kind", "note", "--dry-run", ...conn()]);
    expect(dry.code).toBe(0);
    expect(dry.out.filter((l) => /^would move \S+ \(/.test(l))).toHaveLength(2);
    expect(await mesh.sessions.peek("agent:heir:main")).toEqual([]);

    const moved = await cli(["redirect", "--json", "--from", "agent:gone:main", "--to", "agent:heir:main", "--kind", "note", ...conn()]);
    expect(JSON.parse(moved.out[0]!)).toMatchObject({ dryRun: false, skipped: 3 });
    const heir = await mesh.sessions.peek("agent:heir:main");
    expect(heir.map((p) => [p.kind, p.envelope?.body])).toEqual([["note", "o1"], ["note", "o3"]]);
    expect(heir[0]?.envelope).toMatchObject({ redirectedFrom: { sessionKey: "agent:gone:main" } });
    expect((await mesh.sessions.peek("agent:gone:main")).map((p) => p.kind)).toEqual(["msg", "msg", "msg"]);
  });

  it("shows, drops and redrives parked messages, resuming an interrupted redrive from its cursor", async () => {
    const ins = await inspect(suite.server, prefix);
    const to = mesh.address("agent:bad:main");
    for (let i = 0; i < 4; i++) await ins.js.publish(ins.names.inboxSubject(to, "gw1", "msg"), `not json ${i}`);
    expect(await takeAll(mesh, "agent:bad:main")).toEqual([]);
    const parked = JSON.parse((await cli(["parked", "list", "--json", ...conn()])).out[0]!) as { parkedSeq: number; reason: string }[];
    expect(parked.map((p) => p.reason)).toEqual(["invalid_json", "invalid_json", "invalid_json", "invalid_json"]);
    const [a, b, c, d] = parked.map((p) => p.parkedSeq) as [number, number, number, number];

    const shown = await cli(["parked", "show", String(a), ...conn()]);
    expect(shown.out[0]).toMatch(new RegExp(`^parked message ${a} \\(10 bytes\\)$`));
    expect(shown.out).toContain("  Mesh-Park-Reason: invalid_json");
    expect(shown.out.at(-1)).toBe("not json 0");

    expect((await cli(["parked", "drop", String(a), ...conn()])).out).toEqual(["dropped 1 parked message(s)"]);
    expect((await cli(["parked", "show", String(a), ...conn()])).code).toBe(3);

    // A run of [b, c, d] was interrupted after redriving b but before recording it: the cursor
    // says none done. The re-run finds b gone, counts it done, and redrives the rest.
    const first = await cli(["parked", "redrive", String(b), ...conn()]);
    expect(first.code).toBe(0);
    mkdirSync(STATE_DIR, { recursive: true });
    writeFileSync(join(STATE_DIR, "redrive-cursor.json"), JSON.stringify({ key: [b, c, d].join(","), done: 0 }));
    const resumed = await cli(["parked", "redrive", String(b), String(c), String(d), ...conn()]);
    expect(resumed.code).toBe(0);
    expect(resumed.out).toEqual([`redriven 1/3 (${b} was already redriven)`, "redriven 2/3", "redriven 3/3"]);
    expect(existsSync(join(STATE_DIR, "redrive-cursor.json"))).toBe(false);
    expect((await cli(["parked", "list", "--json", ...conn()])).out).toEqual(["[]"]);
  });

  it("tails envelopes as they arrive, one line each, without bodies unless asked", async () => {
    const stop = new AbortController();
    let ready!: () => void;
    const isReady = new Promise<void>((r) => (ready = r));
    let seen!: (line: string) => void;
    const arrived = new Promise<string>((r) => (seen = r));
    const running = cli(["tail", "--session", "agent:tailed:main", ...conn()], stop.signal, (line) => {
      if (line.startsWith("tailing")) ready();
      else if (line.includes(" msg ")) seen(line);
    });
    await isReady;
    const sent = await mesh.send({ from: "agent:cli:main", to: "agent:tailed:main", body: "secret body" });
    const line = await arrived;
    stop.abort();
    expect((await running).code).toBe(0);
    expect(line).toMatch(new RegExp(`^\\S+ msg gw1/agent:cli:main -> gw1/agent:tailed:main ${sent.id}$`));
    expect(line).not.toContain("secret body");
  });

  it("finishes a redirect that stopped between storing a copy and claiming the original, without a second copy", async () => {
    const sent = [];
    for (let i = 0; i < 3; i++) sent.push(await mesh.send({ from: "agent:cli:main", to: "agent:half:main", body: `h${i}` }));
    // What a run killed after storing the first two copies (and claiming nothing) left behind.
    for (const s of sent.slice(0, 2)) {
      const copy = await mesh.send({ from: "agent:half:main", to: "agent:whole:main", id: ReservedIds.redirect("gw1/agent:half:main", s.id), body: "copy" });
      expect(copy.duplicate).toBe(false);
    }
    const moved = await cli(["redirect", "--json", "--from", "agent:half:main", "--to", "agent:whole:main", ...conn()]);
    expect(JSON.parse(moved.out[0]!)).toMatchObject({ moved: [{ id: sent[0]!.id }, { id: sent[1]!.id }, { id: sent[2]!.id }] });
    expect(await takeAll(mesh, "agent:whole:main")).toEqual(sent.map((s) => ReservedIds.redirect("gw1/agent:half:main", s.id)));
    expect(await takeAll(mesh, "agent:half:main")).toEqual([]);
    // Nothing left to move: a further run moves nothing.
    expect((await cli(["redirect", "--from", "agent:half:main", "--to", "agent:whole:main", ...conn()])).out).toEqual(["moved 0 message(s)"]);
  });

  it("redirects 1,000 orphans exactly once across a SIGKILL and a re-run", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 1000; i += 100) {
      const sent = await Promise.all(Array.from({ length: 100 }, (_, j) => mesh.send({ from: "agent:cli:main", to: "agent:lost:main", body: { n: i + j } })));
      ids.push(...sent.map((s) => s.id));
    }
    const args = ["redirect", "--from", "agent:lost:main", "--to", "agent:found:main", ...conn()];
    // First run: SIGKILLed halfway, wherever it is once it has reported 500 moved.
    const first = spawn(process.execPath, ["--import", "tsx", join(root, "test/fixtures/cli-killed.ts"), ...args], { cwd: root, env: { ...process.env, KILL_AFTER: "500" }, stdio: ["ignore", "pipe", "pipe"] });
    let firstOut = "";
    first.stdout.on("data", (d: Buffer) => (firstOut += d.toString()));
    const [, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((r) => first.on("close", (c, s) => r([c, s])));
    expect(signal).toBe("SIGKILL");
    expect(firstOut).toMatch(/moved 500\/1000/);
    expect(firstOut).not.toMatch(/moved 1000 message/);
    // Second run: picks up what is left.
    const second = spawn(process.execPath, ["--import", "tsx", join(root, "src/cli/main.ts"), ...args], { cwd: root, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    second.stdout.on("data", (d: Buffer) => (out += d.toString()));
    second.stderr.on("data", (d: Buffer) => (err += d.toString()));
    const code = await new Promise<number | null>((r) => second.on("close", r));
    expect(err).toBe("");
    expect(code).toBe(0);
    expect(out).toMatch(/moved \d+ message\(s\)/);

    const atTarget = await takeAll(mesh, "agent:found:main");
    const expected = ids.map((id) => ReservedIds.redirect("gw1/agent:lost:main", id));
    expect(atTarget.length).toBe(1000);
    expect(new Set(atTarget)).toEqual(new Set(expected));
    expect(await takeAll(mesh, "agent:lost:main")).toEqual([]);
  }, 120_000);
});

describe("clawmesh command line with authorization on", () => {
  let secured: SecuredMesh;
  const as = (instance: "gw-a" | "gw-b") => ["--server", secured.server.url, "--instance", instance, "--user", instance, "--password", passwordOf(instance)];

  beforeAll(async () => {
    secured = await startSecuredMesh(["gw-a", "gw-b"]);
    await secured.provision("gw-a", "gw-b");
  });
  afterAll(async () => {
    await secured?.dispose();
  });

  it("shows an instance its own sessions and messages, and refuses another's in one clear line", async () => {
    expect((await cli(["send", ...as("gw-a"), "--to", "agent:main:main", "--message", "for a"])).code).toBe(0);
    const own = await cli(["sessions", "--json", ...as("gw-a")]);
    expect(own.code).toBe(0);
    expect((JSON.parse(own.out[0]!) as { session: string; pending: number }[]).map((s) => [s.session, s.pending])).toEqual([["gw-a/agent:main:main", 1]]);
    const peek = await cli(["inbox", "agent:main:main", "--json", ...as("gw-a")]);
    expect((JSON.parse(peek.out[0]!) as { body: unknown }[]).map((p) => p.body)).toEqual(["for a"]);

    const theirs = await cli(["inbox", "agent:main:main", "--of", "gw-a", ...as("gw-b")]);
    expect(theirs.code).toBe(1);
    expect(theirs.err).toHaveLength(1);
    expect(theirs.err[0]).toMatch(/^clawmesh: not_permitted: /);
    const listing = await cli(["sessions", "--of", "gw-a", ...as("gw-b")]);
    expect(listing.code).toBe(1);
    expect(listing.err[0]).toMatch(/^clawmesh: not_permitted: /);
    // Instances may not watch inbox subjects at all.
    const tailed = await cli(["tail", ...as("gw-a")], AbortSignal.timeout(30_000));
    expect(tailed.code).toBe(1);
    expect(tailed.err).toHaveLength(1);
    expect(tailed.err[0]).toMatch(/^clawmesh: not_permitted: /);
  });

  it("shows the operator every instance's sessions and messages", async () => {
    const ops = ["--server", secured.server.url, "--instance", OPERATOR.user, "--user", OPERATOR.user, "--password", OPERATOR.password];
    const all = await cli(["sessions", "--all", "--json", ...ops]);
    expect(all.code).toBe(0);
    expect((JSON.parse(all.out[0]!) as { session: string }[]).map((s) => s.session)).toContain("gw-a/agent:main:main");
    const peek = await cli(["inbox", "agent:main:main", "--of", "gw-a", "--json", ...ops]);
    expect((JSON.parse(peek.out[0]!) as { body: unknown }[]).map((p) => p.body)).toEqual(["for a"]);
  });
});
