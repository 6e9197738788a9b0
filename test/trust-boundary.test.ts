/**
 * The trust boundary in its deployment shape: three gateways on one nats-server running the
 * generated authorization, each its own user. A neighbour (gw-b) with valid credentials of its own
 * tries every JetStream API and KV operation it can name against gw-a, publishes with every
 * JetStream header on the subjects it may publish to, and forges bodies under keys it may write.
 * Each attempt is refused or has no effect, and afterwards the victim shows every accepted message
 * exactly once.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { headers, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, AckPolicy, type PubAck } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { parseSessionKey, type Mesh } from "../src/index.js";
import { encodeToken } from "../src/address/index.js";
import { Names, ServerFeatures } from "../src/topology/index.js";
import { Kinds, createEnvelope, encodeEnvelope, type TaskRecord } from "../src/wire/index.js";
import { apiCode, isPermissionDenied } from "../src/transport/js-errors.js";
import { SessionProcess } from "./harness/child.js";
import { takeAll } from "./harness/mesh.js";
import { passwordOf, startSecuredMesh, type SecuredMesh } from "./harness/secured.js";

const PREFIX = "mesh";
const names = new Names(PREFIX);
let secured: SecuredMesh;
let a: Mesh;
let b: Mesh;
let c: Mesh;

beforeAll(async () => {
  secured = await startSecuredMesh(["gw-a", "gw-b", "gw-c"], PREFIX);
  await secured.provision("gw-a", "gw-b", "gw-c");
  a = await secured.meshAs("gw-a");
  b = await secured.meshAs("gw-b");
  c = await secured.meshAs("gw-c");
});
afterAll(async () => {
  await secured?.dispose();
});

/**
 * A raw connection of gw-b that records every permission violation the server reports;
 * `refusedAll` resolves once each of the subjects was reported refused.
 */
async function neighbour(): Promise<{ nc: NatsConnection; refusedAll(subjects: readonly string[]): Promise<void> }> {
  const nc = await secured.rawAs("gw-b");
  const refused = new Set<string>();
  const waiters: { subjects: readonly string[]; done: () => void }[] = [];
  const settle = () => {
    for (const w of [...waiters]) if (w.subjects.every((s) => refused.has(s))) waiters.splice(waiters.indexOf(w), 1) && w.done();
  };
  void (async () => {
    for await (const st of nc.status()) {
      const err = (st as { error?: unknown }).error;
      if (st.type === "error" && isPermissionDenied(err)) refused.add((err as { subject?: string }).subject ?? "");
      settle();
    }
  })();
  return {
    nc,
    refusedAll: (subjects) =>
      new Promise<void>((done) => {
        waiters.push({ subjects, done });
        settle();
      }),
  };
}

/** A KV bucket of the mesh as a raw client opens it (direct gets, no checks). */
const bucket = (nc: NatsConnection, name: string) => new Kvm(nc).open(name, { bindOnly: true, allow_direct: true });

describe("a neighbour and another pair's task", () => {
  it("reads neither the request nor the result, and a watch it sets learns the state only", async () => {
    const boss = await a.sessions.open("agent:boss:main");
    const t = await boss.delegate({ to: c.address({ sessionKey: "agent:worker:main", instance: "gw-c" }), message: "the secret plan" });
    const spy = await b.sessions.open("agent:spy:main");
    await spy.services.watches.add(spy.address, { taskId: t.taskId, requester: "gw-a" }, ["completed"]);

    const key = `$KV.${PREFIX}_tasks.${names.taskRecordKey({ requester: { instance: "gw-a" }, assignee: { instance: "gw-c" }, taskId: t.taskId })}`;
    const reads: [string, (nc: NatsConnection) => Promise<unknown>][] = [
      ["direct get of the key", async (nc) => (await jetstreamManager(nc, { checkAPI: false })).direct.getMessage(`KV_${PREFIX}_tasks`, { last_by_subj: key })],
      ["direct get on a wildcard", async (nc) => (await jetstreamManager(nc, { checkAPI: false })).direct.getMessage(`KV_${PREFIX}_tasks`, { last_by_subj: `$KV.${PREFIX}_tasks.*.*.${t.taskId}` })],
      ["direct get by sequence", async (nc) => (await jetstreamManager(nc, { checkAPI: false })).direct.getMessage(`KV_${PREFIX}_tasks`, { seq: 1 })],
      ["message get", async (nc) => (await jetstreamManager(nc, { checkAPI: false })).streams.getMessage(`KV_${PREFIX}_tasks`, { last_by_subj: key })],
      ["a KV get", async (nc) => (await bucket(nc, `${PREFIX}_tasks`)).get(`gw-a.gw-c.${t.taskId}`)],
      ["a consumer", async (nc) => (await jetstreamManager(nc, { checkAPI: false })).consumers.add(`KV_${PREFIX}_tasks`, { ack_policy: AckPolicy.None })],
    ];
    for (const [what, attempt] of reads) expect(await secured.attemptAs("gw-b", attempt), what).toMatch(/permission/i);
    expect(await b.tasks.get(t.taskId)).toBeUndefined();
    expect((await b.tasks.list()).map((r) => r.taskId)).not.toContain(t.taskId);

    const worker = await c.sessions.open("agent:worker:main");
    await takeAll(worker);
    expect((await worker.complete({ taskId: t.taskId, state: "completed", result: "the secret result" })).outcome).toBe("finished");
    const done = await boss.await([{ taskId: t.taskId }], { timeoutMs: 10_000 });
    expect(done.done).toMatchObject([{ taskId: t.taskId, result: "the secret result" }]);

    const notice = await spy.take();
    expect(notice.messages.map((m) => m.kind)).toEqual([Kinds.watchEvent]);
    expect(notice.messages[0]!.body).toMatchObject({ event: "completed", taskId: t.taskId, state: "completed" });
    expect(JSON.stringify(notice.messages[0]!.body)).not.toContain("secret");
    await notice.confirm();
    await Promise.all([boss.close(), spy.close(), worker.close()]);
  });
});

describe("records whose body disagrees with their key", () => {
  it("are ignored: a forged task makes nobody deliver to a third instance, a forged binding or session record names nobody", async () => {
    const { nc } = await neighbour();
    const victim = parseSessionKey("agent:main:main", "gw-a");
    const third = parseSessionKey("agent:main:main", "gw-c");
    const now = new Date().toISOString();
    // A decided, unnotified task under a key gw-b may write (gw-b -> gw-a), whose body names gw-c as requester.
    const forged: TaskRecord = { v: 1, taskId: "forged-1", requester: third, assignee: victim, state: "completed", result: "from gw-a?", createdAt: now, updatedAt: now, notified: false };
    await (await bucket(nc, `${PREFIX}_tasks`)).put("gw-b.gw-a.forged-1", JSON.stringify(forged));
    // A binding and a session record under gw-b's keys that name gw-a's session.
    await (await bucket(nc, `${PREFIX}_directory`)).put(names.directoryKey("discord:#ops", parseSessionKey("agent:main:main", "gw-b")), JSON.stringify({ v: 1, channel: "discord:#ops", sessionKey: "agent:main:main", instance: "gw-a", agent: "main", boundAt: now }));
    const squatted = parseSessionKey("agent:main:squat", "gw-b");
    await (await bucket(nc, `${PREFIX}_sessions`)).put(names.sessionRecordKey(squatted), JSON.stringify({ v: 1, address: { ...squatted, instance: "gw-a" }, sessionKey: "agent:main:squat", lifecycle: "active", resumable: true, owner: "gw-a", createdAt: now, lastActivity: now }));
    await nc.close();

    expect(await a.tasks.recover()).not.toContain("forged-1");
    expect(await a.tasks.get("forged-1")).toBeUndefined();
    const thirdInbox = await c.sessions.openInbox("agent:main:main");
    expect(await takeAll(thirdInbox)).toEqual([]);
    await thirdInbox.close();
    await expect(a.channels.resolve("discord:#ops")).rejects.toMatchObject({ code: "unknown_channel" });
    expect((await a.sessions.list()).map((r) => r.sessionKey)).not.toContain("agent:main:squat");
  });

  it("cannot be written where the key names another instance", async () => {
    const { nc, refusedAll } = await neighbour();
    const writes = [
      `$KV.${PREFIX}_taskkeys.gw-a.gw-a.main.${"0".repeat(32)}`,
      `$KV.${PREFIX}_watches.s.gw-a.main.main.${encodeToken("")}.gw-a.w1`,
      `$KV.${PREFIX}_watches.t.gw-a.gw-c.t1.gw-a.w1`,
      `$KV.${PREFIX}_tasks.gw-a.gw-c.t1`,
      `$KV.${PREFIX}_sessions.gw-a.main.main.${encodeToken("")}`,
      `$KV.${PREFIX}_directory.${encodeToken("discord:#ops")}.gw-a.main.0123456789abcdef`,
      `$KV.${PREFIX}_leases_gw-a.main.main.${encodeToken("")}`,
    ];
    for (const subject of writes) nc.publish(subject, "{}");
    await nc.flush();
    await refusedAll(writes);
    await nc.close();
  });
});

describe("task ids", () => {
  it("are scoped by requester: two gateways use the same id with one assignee, and each gets its own result", async () => {
    const worker = c.address({ sessionKey: "agent:shared:main", instance: "gw-c" });
    const bossA = await a.sessions.open("agent:boss:ids");
    const bossB = await b.sessions.open("agent:boss:ids");
    await bossA.delegate({ to: worker, message: "report for a", taskId: "report-1" });
    await bossB.delegate({ to: worker, message: "report for b", taskId: "report-1" });
    const run = await c.sessions.open("agent:shared:main");
    const batch = await run.take();
    expect(batch.messages.map((m) => [m.from.instance, m.taskId])).toEqual([["gw-a", "report-1"], ["gw-b", "report-1"]]);
    await batch.confirm();
    await expect(run.complete({ taskId: "report-1", state: "completed", result: "?" })).rejects.toMatchObject({ code: "ambiguous_task" });
    await run.complete({ taskId: "report-1", requester: "gw-a", state: "completed", result: "for a" });
    await run.complete({ taskId: "report-1", requester: "gw-b", state: "completed", result: "for b" });
    expect((await bossA.await([{ taskId: "report-1" }], { timeoutMs: 10_000 })).done).toMatchObject([{ result: "for a" }]);
    expect((await bossB.await([{ taskId: "report-1" }], { timeoutMs: 10_000 })).done).toMatchObject([{ result: "for b" }]);
    await Promise.all([bossA.close(), bossB.close(), run.close()]);
  });
});

describe("every JetStream API a neighbour can name", () => {
  it("is refused against the victim's streams, consumers and buckets and the shared ones' configuration", async () => {
    const victimStreams = [names.inboxStream("gw-a"), names.parkedStream("gw-a"), names.seenStream("gw-a"), `KV_${names.leaseBucket("gw-a")}`];
    const shared = [names.taskBucket(), names.sessionBucket(), names.directoryBucket(), names.watchBucket(), names.taskKeyBucket()].map((n) => `KV_${n}`);
    const consumer = names.sessionConsumer(parseSessionKey("agent:main:main", "gw-a"));
    const api = "$JS.API";
    const requests = [
      ...victimStreams.flatMap((s) => [
        `STREAM.CREATE.${s}`, `STREAM.UPDATE.${s}`, `STREAM.DELETE.${s}`, `STREAM.PURGE.${s}`, `STREAM.INFO.${s}`, `STREAM.MSG.GET.${s}`,
        `STREAM.MSG.DELETE.${s}`, `DIRECT.GET.${s}`, `DIRECT.GET.${s}.>`, `STREAM.SNAPSHOT.${s}`, `STREAM.RESTORE.${s}`, `STREAM.PEER.REMOVE.${s}`,
        `STREAM.LEADER.STEPDOWN.${s}`, `CONSUMER.CREATE.${s}`, `CONSUMER.CREATE.${s}.spy`, `CONSUMER.DURABLE.CREATE.${s}.spy`, `CONSUMER.INFO.${s}.${consumer}`,
        `CONSUMER.DELETE.${s}.${consumer}`, `CONSUMER.LIST.${s}`, `CONSUMER.NAMES.${s}`, `CONSUMER.MSG.NEXT.${s}.${consumer}`, `CONSUMER.PAUSE.${s}.${consumer}`,
        `CONSUMER.LEADER.STEPDOWN.${s}.${consumer}`,
      ]),
      ...shared.flatMap((s) => [`STREAM.CREATE.${s}`, `STREAM.UPDATE.${s}`, `STREAM.DELETE.${s}`, `STREAM.PURGE.${s}`, `STREAM.MSG.DELETE.${s}`, `CONSUMER.CREATE.${s}`, `CONSUMER.CREATE.${s}.spy`, `CONSUMER.DURABLE.CREATE.${s}.spy`, `STREAM.SNAPSHOT.${s}`, `STREAM.RESTORE.${s}`]),
      // Its own streams' configuration (provisioning is the operator's) and account-wide calls.
      `STREAM.CREATE.${names.inboxStream("gw-b")}`, `STREAM.UPDATE.${names.inboxStream("gw-b")}`, `STREAM.PURGE.${names.inboxStream("gw-b")}`, `STREAM.DELETE.${names.seenStream("gw-b")}`,
      `STREAM.CREATE.${PREFIX}_x_gw-b`, "STREAM.LIST", "CONSUMER.LIST.x", "META.LEADER.STEPDOWN", "SERVER.REMOVE", "ACCOUNT.PURGE.$G", "STREAM.TEMPLATE.CREATE.x",
    ].map((s) => `${api}.${s}`);
    const { nc, refusedAll } = await neighbour();
    const outcomes = await Promise.all(requests.map((subject) => nc.request(subject, "{}", { timeout: 5000 }).then(() => "answered", (err: unknown) => (isPermissionDenied(err) ? "refused" : `failed: ${String(err)}`))));
    expect(Object.fromEntries(requests.map((s, i) => [s, outcomes[i]]))).toEqual(Object.fromEntries(requests.map((s) => [s, "refused"])));

    // Core publishes and subscriptions on the victim's subjects.
    const publishes = [`${PREFIX}.in.gw-a.gw-a.main.main.${encodeToken("")}.msg`, `${PREFIX}.seen.gw-a.main.main.${encodeToken("")}`, `${PREFIX}.parked.gw-a.main.main.${encodeToken("")}`, `${PREFIX}.alive.gw-a.holder`, "_INBOX_gw-a.x", `$JS.ACK.${names.inboxStream("gw-a")}.${consumer}.1.1.1.1.0`];
    for (const s of publishes) nc.publish(s, "x");
    const subscriptions = [`${PREFIX}.in.>`, `${PREFIX}.alive.gw-a.*`, "_INBOX_gw-a.>", `$KV.${PREFIX}_tasks.>`, `$KV.${names.leaseBucket("gw-a")}.>`, "$JS.API.>", "$JS.EVENT.>", ">"];
    for (const s of subscriptions) nc.subscribe(s);
    await nc.flush();
    await refusedAll([...publishes, ...subscriptions]);
    await nc.close();
  });

  it("publishes with every JetStream header on its allowed subjects without effect on the victim, who shows every accepted message once", async () => {
    const victim = a.address({ sessionKey: "agent:main:headers", instance: "gw-a" });
    const before = await c.send({ from: "agent:main:main", to: victim, body: "from c, before" });
    const honest = await b.send({ from: "agent:main:main", to: victim, body: "from b, honest" });
    const { nc } = await neighbour();
    const js = jetstream(nc);
    const subject = names.inboxSubject(victim, "gw-b", Kinds.message);
    const accepted = new Set<string>([before.id, honest.id]);
    const attempt = async (id: string, set: Record<string, string>): Promise<PubAck | undefined> => {
      const h = headers();
      for (const [k, v] of Object.entries(set)) h.set(k, v);
      const env = createEnvelope({ id, kind: Kinds.message, from: parseSessionKey("agent:main:main", "gw-b"), to: victim, body: `headers ${JSON.stringify(set)}` });
      const ack = await js.publish(subject, encodeEnvelope(env, 1 << 20, 1 << 20), { headers: h, timeout: 5000 }).catch(() => undefined);
      if (ack && !ack.duplicate) accepted.add(id);
      return ack;
    };
    const refusedOutright = [
      await attempt("h-rollup-all", { "Nats-Rollup": "all" }),
      await attempt("h-rollup-sub", { "Nats-Rollup": "sub" }),
      await attempt("h-expected-stream", { "Nats-Expected-Stream": names.inboxStream("gw-c") }),
      await attempt("h-expected-last-seq", { "Nats-Expected-Last-Sequence": "1" }),
      await attempt("h-expected-last-msg-id", { "Nats-Expected-Last-Msg-Id": "nope" }),
    ];
    expect(refusedOutright).toEqual([undefined, undefined, undefined, undefined, undefined]);
    // Accepted as plain messages from gw-b (these servers give the headers no meaning here, or only over gw-b's own message).
    for (const [id, set] of [
      ["h-msg-id-guess", { "Nats-Msg-Id": before.id }],
      ["h-marker", { "Nats-Marker-Reason": "MaxAge" }],
      ["h-ttl", { "Nats-TTL": "1s" }],
      ["h-kv-purge", { "KV-Operation": "PURGE" }],
      ["h-kv-del", { "KV-Operation": "DEL" }],
      ["h-expected-subject-seq", { "Nats-Expected-Last-Subject-Sequence": "0" }],
      ["h-expected-own-stream", { "Nats-Expected-Stream": names.inboxStream("gw-a") }],
    ] as const) await attempt(id, set);
    // The same publish id twice from gw-b: the second is a duplicate, stored once.
    await attempt("h-dup", { "Nats-Msg-Id": "b-dup" });
    expect((await attempt("h-dup-again", { "Nats-Msg-Id": "b-dup" }))?.duplicate).toBe(true);
    // Rollups on KV keys gw-b may write are refused too; its own key keeps its value.
    const tasksKv = await bucket(nc, `${PREFIX}_tasks`);
    const rollup = headers();
    rollup.set("Nats-Rollup", "all");
    await expect(js.publish(`$KV.${PREFIX}_tasks.gw-b.gw-a.own`, "{}", { headers: rollup, timeout: 5000 })).rejects.toThrow(/rollup/i);
    expect(await tasksKv.get("gw-b.gw-a.own")).toBeNull();
    const after = await c.send({ from: "agent:main:main", to: victim, body: "from c, after" });
    accepted.add(after.id);
    await nc.close();

    const run = await a.sessions.open("agent:main:headers");
    const shown = await takeAll(run);
    await run.close();
    expect(shown.sort()).toEqual([...accepted].sort());
    expect((await a.parked.list()).filter((p) => p.subject.includes("headers"))).toEqual([]);
  });
});

describe("the feed of task records", () => {
  it("is granted a neighbour for the tasks it requested only: every consumer on another filter is refused, and nothing of the victim's reaches it", async () => {
    const stream = `KV_${names.taskBucket()}`;
    const own = `$KV.${names.taskBucket()}.gw-b.*.*`;
    const victims = `$KV.${names.taskBucket()}.gw-a.*.*`;
    const asAssignee = `$KV.${names.taskBucket()}.*.gw-a.*`;
    const nc = await secured.rawAs("gw-b");
    const seen: string[] = [];
    let sawOwn: () => void = () => {};
    const ownArrived = new Promise<void>((resolve) => (sawOwn = resolve));
    const create = async (i: number, subjectFilter: string, config: Record<string, unknown>): Promise<string> => {
      nc.subscribe(`_INBOX_gw-b.feed.${i}`, {
        callback: (_err, m) => {
          if (m.headers?.code === 100) return;
          seen.push(m.subject);
          if (m.subject.startsWith(`$KV.${names.taskBucket()}.gw-b.`)) sawOwn();
        },
      });
      const body = { stream_name: stream, config: { name: `spy${i}`, deliver_subject: `_INBOX_gw-b.feed.${i}`, ack_policy: "none", deliver_policy: "new", ...config } };
      try {
        const reply = (await nc.request(`$JS.API.CONSUMER.CREATE.${stream}.spy${i}.${subjectFilter}`, JSON.stringify(body), { timeout: 5000 })).json<{ error?: { err_code?: number } }>();
        return reply.error ? "api error" : "created";
      } catch (err) {
        return isPermissionDenied(err) ? "refused" : `failed: ${String(err)}`;
      }
    };
    const outcomes = [
      await create(1, victims, { filter_subject: victims }),
      await create(2, asAssignee, { filter_subject: asAssignee }),
      await create(3, own, { filter_subject: victims }),
      await create(4, own, { filter_subject: own, filter_subjects: [victims] }),
      await create(5, own, {}),
    ];
    expect(outcomes.slice(0, 2)).toEqual(["refused", "refused"]);
    // The server holds the consumer's filter to the one its create subject names. A 2.9 server
    // does not know `filter_subjects`: it ignores the field and creates the consumer on the named
    // (own) filter, which the deliveries below show.
    const multiFilter = new ServerFeatures(b.serverVersion).supports("multiFilter");
    expect(outcomes.slice(2)).toEqual(["api error", multiFilter ? "api error" : "created", "api error"]);
    // The positive control: its own feed is allowed and delivers.
    expect(await create(6, own, { filter_subject: own })).toBe("created");

    const boss = await a.sessions.open("agent:boss:feed");
    const worker = c.address({ sessionKey: "agent:worker:feed", instance: "gw-c" });
    const victimTask = await boss.delegate({ to: worker, message: "the victim's plan" });
    await c.tasks.finish({ taskId: victimTask.taskId, by: worker, state: "completed", result: "the victim's result", requester: "gw-a" });
    const spy = await b.sessions.open("agent:spy:feed");
    await spy.delegate({ to: worker, message: "the neighbour's own" });
    await ownArrived;
    await nc.flush();
    expect(seen.length).toBeGreaterThan(0);
    expect(seen.filter((subject) => !subject.startsWith(`$KV.${names.taskBucket()}.gw-b.`))).toEqual([]);
    await nc.close();
  });
});

describe("the janitor under authorization", () => {
  it("moves a SIGKILLed session of its own instance to idle, past another instance's active sessions it may not check", async () => {
    // Another instance's run stays active in the shared registry; its lease is not readable by gw-a.
    const other = await b.sessions.open("agent:busy:main");
    // Default retention, as the operator provisioned the instance.
    const child = await SessionProcess.start({ url: secured.server.url, prefix: PREFIX, instance: "gw-a", retention: {}, auth: { user: "gw-a", password: passwordOf("gw-a") } });
    child.send({ op: "open-run", sessionKey: "agent:crash:main" });
    await child.expect("run-open");
    expect(await a.sessions.get("agent:crash:main")).toMatchObject({ lifecycle: "active" });
    await child.sigkill();

    // gw-a's janitor (this process of the instance) notices on its next sweep, run here.
    expect(await a.admin.sweep()).toEqual(["agent:crash:main"]);
    expect(await a.sessions.get("agent:crash:main")).toMatchObject({ lifecycle: "idle", resumable: true, lastTurn: { outcome: "interrupted" } });
    expect(await b.sessions.get("agent:busy:main")).toMatchObject({ lifecycle: "active" });
    await other.close();
  });
});

describe("the generated account limits", () => {
  it("bound what the mesh's users together may hold on the server", async () => {
    const small = await startSecuredMesh(["gw-a", "gw-b"], PREFIX, { maxConsumers: 6 });
    try {
      await small.provision("gw-a", "gw-b");
      const nc = await small.rawAs("gw-b");
      const jsm = await jetstreamManager(nc, { checkAPI: false });
      const outcomes: string[] = [];
      for (let i = 0; i < 8; i++) {
        outcomes.push(await jsm.consumers.add(names.inboxStream("gw-b"), { durable_name: `c${i}`, ack_policy: AckPolicy.Explicit }).then(() => "created", (err: unknown) => (apiCode(err) === 10026 ? "limit" : String(err))));
      }
      await nc.close();
      expect(outcomes.filter((o) => o !== "created" && o !== "limit")).toEqual([]);
      expect(outcomes.slice(0, 6)).toEqual(Array(6).fill("created"));
      expect(outcomes.slice(6)).toEqual(["limit", "limit"]);
    } finally {
      await small.dispose();
    }
  });
});
