import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { existsSync } from "node:fs";
import { inflateSync } from "node:zlib";
import { Mesh } from "../src/index.js";
import { OPERATOR, passwordOf, startSecuredMesh, type SecuredMesh } from "./harness/secured.js";
import { startUi, type UiServer } from "../src/ui/server.js";
import { run } from "../src/cli/cli.js";
import { useServer } from "./harness/suite.js";
import { takeAll, uniquePrefix } from "./harness/mesh.js";

const CHROMIUM = "/usr/bin/chromium";
const VIEWPORT = { width: 1000, height: 700 };

async function getJson<T>(ui: UiServer, path: string): Promise<T> {
  const res = await fetch(`${ui.url}${path}`);
  expect(res.status).toBe(200);
  return (await res.json()) as T;
}

/** Park a message the session's readers keep giving back (maxDeliveries 2); returns its id. */
async function parkOne(mesh: Mesh, key: string, body: string): Promise<{ id: string; parkedSeq: number }> {
  const sent = await mesh.send({ from: "agent:ops:main", to: key, body });
  const inbox = await mesh.sessions.openInbox(key);
  try {
    for (let i = 0; i < 2; i++) {
      const batch = await inbox.take();
      expect(batch.messages.map((m) => m.id)).toEqual([sent.id]);
      await batch.release();
    }
    expect((await inbox.take()).messages).toEqual([]);
  } finally {
    await inbox.close();
  }
  const parked = await mesh.parked.list(key);
  expect(parked.map((p) => p.reason)).toEqual(["max_deliveries"]);
  return { id: sent.id, parkedSeq: parked[0]!.parkedSeq };
}

/** A server-sent event stream, read as it comes: `until` resolves with the first event whose data matches. */
async function openEvents(url: string, signal: AbortSignal) {
  const res = await fetch(url, { signal });
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  const events: string[] = [];
  let buffered = "";
  const until = async (match: (event: string, data: string) => boolean): Promise<string> => {
    for (;;) {
      let end: number;
      while ((end = buffered.indexOf("\n\n")) >= 0) {
        const raw = buffered.slice(0, end);
        buffered = buffered.slice(end + 2);
        events.push(raw);
        const data = /^data: (.*)$/m.exec(raw)?.[1] ?? "";
        if (match(/^event: (.*)$/m.exec(raw)?.[1] ?? "", data)) return data;
      }
      const { value, done } = await reader.read();
      if (done) throw new Error("event stream ended");
      buffered += value;
    }
  };
  return { events, until };
}

/** Width, height and whether more than one colour appears, from a PNG's own chunks (8-bit RGB/RGBA). */
function decodePng(png: Buffer): { width: number; height: number; colours: number } {
  expect(png.subarray(0, 8)).toEqual(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]));
  let off = 8;
  let width = 0;
  let height = 0;
  let bpp = 0;
  const idat: Buffer[] = [];
  while (off < png.length) {
    const len = png.readUInt32BE(off);
    const type = png.toString("ascii", off + 4, off + 8);
    const data = png.subarray(off + 8, off + 8 + len);
    if (type === "IHDR") {
      width = data.readUInt32BE(0);
      height = data.readUInt32BE(4);
      expect(data[8]).toBe(8);
      bpp = data[9] === 6 ? 4 : data[9] === 2 ? 3 : 0;
      expect(bpp).toBeGreaterThan(0);
      expect(data[12]).toBe(0); // not interlaced
    }
    if (type === "IDAT") idat.push(data);
    off += 12 + len;
  }
  const raw = inflateSync(Buffer.concat(idat));
  const stride = width * bpp;
  const prev = Buffer.alloc(stride);
  const cur = Buffer.alloc(stride);
  const colours = new Set<string>();
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)]!;
    const line = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    for (let x = 0; x < stride; x++) {
      const a = x >= bpp ? cur[x - bpp]! : 0;
      const b = prev[x]!;
      const c = x >= bpp ? prev[x - bpp]! : 0;
      const p = a + b - c;
      const pa = Math.abs(p - a);
      const pb = Math.abs(p - b);
      const pc = Math.abs(p - c);
      const predictor = [0, a, b, (a + b) >> 1, pa <= pb && pa <= pc ? a : pb <= pc ? b : c][filter]!;
      cur[x] = (line[x]! + predictor) & 0xff;
    }
    if (colours.size < 64) for (let x = 0; x < stride; x += bpp) colours.add(cur.subarray(x, x + 3).toString("hex"));
    cur.copy(prev);
  }
  return { width, height, colours: colours.size };
}

describe("the operator's web view", () => {
  const suite = useServer();
  let prefix: string;
  let mesh: Mesh;
  let ui: UiServer;

  beforeAll(async () => {
    prefix = uniquePrefix();
    mesh = await suite.mesh(prefix, "gw1", { inbox: { maxDeliveries: 2 } });
    ui = await startUi({ mesh, port: 0 });
    suite.cleanup(() => ui.close());
  });

  it("serves sessions, tasks with fan-in, parked messages and Prometheus metrics as the mesh has them", async () => {
    expect(ui.access).toBe("operator");
    await mesh.send({ from: "agent:ops:main", to: "agent:json:main", body: "one" });
    await mesh.send({ from: "agent:ops:main", to: "agent:json:main", body: "two" });
    const boss = await mesh.sessions.open("agent:fan:main");
    const t1 = await boss.delegate({ to: mesh.address("agent:w1:main"), message: "part 1" });
    const t2 = await boss.delegate({ to: mesh.address("agent:w2:main"), message: "part 2" });
    await boss.close();
    const parked = await parkOne(mesh, "agent:fragile:main", "fragile");

    const sessions = await getJson<{ session: string; pending: number; oldestPending: string | null }[]>(ui, "/api/sessions");
    expect(sessions.find((s) => s.session === "gw1/agent:json:main")).toMatchObject({ pending: 2 });
    const instances = await getJson<{ instance: string; pending: number; parked: number }[]>(ui, "/api/instances");
    expect(instances.find((i) => i.instance === "gw1")).toMatchObject({ parked: 1 });
    const parkedList = await getJson<{ instance: string; parkedSeq: number; reason: string }[]>(ui, "/api/parked");
    expect(parkedList).toEqual([expect.objectContaining({ instance: "gw1", parkedSeq: parked.parkedSeq, reason: "max_deliveries" })]);
    const tasks = await getJson<{ tasks: { taskId: string }[]; fanIn: { requester: string; finished: number; total: number }[] }>(ui, "/api/tasks");
    expect(tasks.tasks.map((t) => t.taskId)).toEqual(expect.arrayContaining([t1.taskId, t2.taskId]));
    expect(tasks.fanIn).toContainEqual({ requester: "gw1/agent:fan:main", finished: 0, total: 2 });

    // One task finishes: its task.complete reaches the live feed (without its body) and the latency histogram.
    const stop = new AbortController();
    const feed = await openEvents(`${ui.url}/events`, stop.signal);
    // The server registers the stream before it writes hello: what is published after it is fed.
    expect(JSON.parse(await feed.until((event) => event === "hello"))).toMatchObject({ access: "operator", tailing: ["gw1"] });
    await mesh.tasks.finish({ taskId: t1.taskId, by: "agent:w1:main", state: "completed", result: "secret result" });
    const hit = await feed.until((event, data) => event === "envelope" && data.includes('"kind":"task.complete"'));
    const events = feed.events;
    stop.abort();
    expect(events[0]).toMatch(/^event: hello\n/);
    expect(JSON.parse(hit)).toMatchObject({ kind: "task.complete", to: "gw1/agent:fan:main" });
    expect(events.join("\n")).not.toContain("secret result");
    expect((await getJson<{ fanIn: unknown[] }>(ui, "/api/tasks")).fanIn).toContainEqual({ requester: "gw1/agent:fan:main", finished: 1, total: 2 });

    const res = await fetch(`${ui.url}/metrics`);
    expect(res.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    for (const [name, type] of [["clawmesh_pending_messages", "gauge"], ["clawmesh_oldest_pending_age_seconds", "gauge"], ["clawmesh_parked_messages", "gauge"], ["clawmesh_tasks", "gauge"], ["clawmesh_notifications_pending", "gauge"], ["clawmesh_pingback_latency_seconds", "histogram"]]) {
      expect(text).toContain(`# HELP ${name} `);
      expect(text).toContain(`# TYPE ${name} ${type}\n`);
    }
    const value = (line: string) => Number(new RegExp(`^${line.replace(/[{}"+.]/g, "\\$&")} (\\S+)$`, "m").exec(text)?.[1]);
    const pendingGw1 = sessions.filter((s) => s.session.startsWith("gw1/")).reduce((n, s) => n + s.pending, 0);
    expect(value('clawmesh_pending_messages{instance="gw1"}')).toBeGreaterThanOrEqual(pendingGw1);
    expect(value('clawmesh_oldest_pending_age_seconds{instance="gw1"}')).toBeGreaterThan(0);
    expect(value('clawmesh_parked_messages{instance="gw1"}')).toBe(1);
    expect(value('clawmesh_tasks{state="completed"}')).toBe(1);
    expect(value('clawmesh_pingback_latency_seconds_count')).toBe(1);
    expect(value('clawmesh_pingback_latency_seconds_bucket{le="+Inf"}')).toBe(1);
    expect(value('clawmesh_pingback_latency_seconds_bucket{le="60"}')).toBe(1);
  });

  it("refuses a redrive without the action header and answers a missing parked message with 404", async () => {
    expect((await fetch(`${ui.url}/api/parked/gw1/1/redrive`, { method: "POST" })).status).toBe(403);
    const missing = await fetch(`${ui.url}/api/parked/gw1/999999/redrive`, { method: "POST", headers: { "X-Clawmesh-Action": "1" } });
    expect(missing.status).toBe(404);
    expect(await missing.json()).toMatchObject({ error: "not_found" });
    expect((await fetch(`${ui.url}/api/parked/gw1/1/redrive`)).status).toBe(405);
  });

  it("runs as `clawmesh ui` until stopped, read-only on request", async () => {
    const stop = new AbortController();
    let started!: (url: string) => void;
    const url = new Promise<string>((r) => (started = r));
    const err: string[] = [];
    const io = {
      out: (line: string) => {
        const m = /^clawmesh ui at (\S+) \(read-only\)/.exec(line);
        if (m) started(m[1]!);
      },
      err: (line: string) => void err.push(line),
    };
    const running = run(["ui", "--port", "0", "--read-only", "--server", suite.server.url, "--prefix", prefix, "--instance", "gw1"], io, stop.signal);
    const base = await Promise.race([url, running.then((code) => { throw new Error(`ui ended early (${code}): ${err.join("; ")}`); })]);
    const state = (await (await fetch(`${base}/api/state`)).json()) as { access: string; self: string };
    expect(state).toMatchObject({ access: "read-only", self: "gw1" });
    expect((await fetch(`${base}/api/parked/gw1/1/redrive`, { method: "POST", headers: { "X-Clawmesh-Action": "1" } })).status).toBe(403);
    expect(await (await fetch(`${base}/metrics`)).text()).toContain("# TYPE clawmesh_parked_messages gauge");
    stop.abort();
    expect(await running).toBe(0);
    expect(await run(["ui", "--port", "http"], io)).toBe(2);
    expect(err.at(-1)).toMatch(/^clawmesh: usage: --port must be a port number/);
  });

  it.skipIf(!existsSync(CHROMIUM))("shows a session, a task and a parked message in Chromium, and redrives the message exactly once", async () => {
    await mesh.send({ from: "agent:ops:main", to: "agent:seen:main", body: "visible" });
    const boss = await mesh.sessions.open("agent:asker:main");
    const task = await boss.delegate({ to: mesh.address("agent:doer:main"), message: "browse" });
    await boss.close();
    const parked = await parkOne(mesh, "agent:redrive:main", "again");

    const { chromium } = await import("playwright-core");
    // playwright gives each launch a fresh, empty profile directory of its own.
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    });
    try {
      const page = await browser.newPage({ viewport: VIEWPORT });
      await page.goto(ui.url);
      await page.locator('#sessions tr[data-session="gw1/agent:seen:main"]').waitFor();
      await page.locator(`#tasks tr[data-task="${task.taskId}"]`).waitFor();
      const row = page.locator(`#parked tr[data-parked="gw1/${parked.parkedSeq}"]`);
      await row.waitFor();
      expect(await page.locator("#access").textContent()).toMatch(/^Operator view: /);
      expect(await row.locator("td").nth(3).textContent()).toBe("max_deliveries");

      const png = await page.screenshot();
      const shot = decodePng(png);
      expect([shot.width, shot.height]).toEqual([VIEWPORT.width, VIEWPORT.height]);
      expect(shot.colours).toBeGreaterThan(2);

      await row.locator("button.redrive").click();
      await row.waitFor({ state: "detached" });
      expect(await page.locator("#errors").textContent()).toBe("");
    } finally {
      await browser.close();
    }
    expect(await mesh.parked.list("agent:redrive:main")).toEqual([]);
    const inbox = await mesh.sessions.openInbox("agent:redrive:main");
    try {
      expect(await takeAll(inbox)).toEqual([parked.id]);
    } finally {
      await inbox.close();
    }
  });
});

describe("the operator's web view with authorization on", () => {
  let secured: SecuredMesh;
  const closers: (() => Promise<unknown>)[] = [];

  beforeAll(async () => {
    secured = await startSecuredMesh(["gw-a"]);
    await secured.provision("gw-a");
  });
  afterAll(async () => {
    for (const c of closers.reverse()) await c().catch(() => undefined);
    await secured?.dispose();
  });

  async function view(user: string, password: string, instance: string): Promise<{ mesh: Mesh; ui: UiServer }> {
    const mesh = await Mesh.connect({ servers: secured.server.url, instance, prefix: "mesh", provision: instance !== OPERATOR.user, inbox: { maxDeliveries: 2 }, auth: { user, password } });
    closers.push(() => mesh.close());
    const ui = await startUi({ mesh, port: 0 });
    closers.push(() => ui.close());
    return { mesh, ui };
  }

  it("gives an instance credential a read-only view that refuses redrive with 403, and the operator's view redrives", async () => {
    const a = await view("gw-a", passwordOf("gw-a"), "gw-a");
    expect(a.ui.access).toBe("read-only");
    const parked = await parkOne(a.mesh, "agent:main:main", "for a");

    const state = await getJson<{ access: string; accessReason: string; instances: { instance: string; parked: number }[] }>(a.ui, "/api/state");
    expect(state.access).toBe("read-only");
    expect(state.accessReason).toMatch(/operator/);
    expect(state.instances).toEqual([expect.objectContaining({ instance: "gw-a", parked: 1 })]);
    const refused = await fetch(`${a.ui.url}/api/parked/gw-a/${parked.parkedSeq}/redrive`, { method: "POST", headers: { "X-Clawmesh-Action": "1" } });
    expect(refused.status).toBe(403);
    expect(await refused.json()).toMatchObject({ error: "read_only", message: expect.stringMatching(/read-only.*operator/) });
    expect(await a.mesh.parked.list("agent:main:main")).toHaveLength(1);

    const ops = await view(OPERATOR.user, OPERATOR.password, OPERATOR.user);
    expect(ops.ui.access).toBe("operator");
    const done = await fetch(`${ops.ui.url}/api/parked/gw-a/${parked.parkedSeq}/redrive`, { method: "POST", headers: { "X-Clawmesh-Action": "1" } });
    expect(done.status).toBe(200);
    expect(await a.mesh.parked.list("agent:main:main")).toEqual([]);
    const inbox = await a.mesh.sessions.openInbox("agent:main:main");
    try {
      expect(await takeAll(inbox)).toEqual([parked.id]);
    } finally {
      await inbox.close();
    }
  });
});
