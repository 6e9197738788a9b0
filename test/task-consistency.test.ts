/**
 * Task creation and completion under crashes and refusals: no task-key entry without its task, no
 * record claiming a request nobody received, and a completion whose requester cannot take it yet
 * is kept and delivered once, in the background, when room appears.
 */
import { describe, expect, it } from "vitest";
import { Kvm } from "@nats-io/kv";
import { PayloadTooLargeError, StreamRefusedError, UnknownInstanceError, meshTools, parseSessionKey, type InboxMessage, type MeshSession, type MeshTool } from "../src/index.js";
import { Kinds, ReservedIds, TaskKeyEntrySchema, TaskRecordSchema } from "../src/wire/index.js";
import { inspect, uniquePrefix } from "./harness/mesh.js";
import { useServer } from "./harness/suite.js";
import { SessionProcess } from "./harness/child.js";
import { until } from "./harness/wait.js";
import type { DelegateStep } from "../src/index.js";

const suite = useServer();
const tool = (name: string): MeshTool => meshTools.find((t) => t.name === name)!;

/** Envelope ids of every message stored in an instance's inbox stream, with how often each is stored. */
async function storedIds(prefix: string, instance: string): Promise<Map<string, number>> {
  const ins = await inspect(suite.server, prefix);
  const stream = ins.names.inboxStream(instance);
  const { state } = await ins.jsm.streams.info(stream);
  const ids = new Map<string, number>();
  for (let seq = state.first_seq; state.messages > 0 && seq <= state.last_seq; seq++) {
    const m = await ins.jsm.streams.getMessage(stream, { seq }).catch(() => null);
    // Envelope ids (the Nats-Msg-Id header carries the id keyed with the sender's secret).
    const id = m ? (m.json<{ id?: string }>().id ?? undefined) : undefined;
    if (id) ids.set(id, (ids.get(id) ?? 0) + 1);
  }
  return ids;
}

/** Next messages of a run: take, and wait for an arrival while nothing is there (no polling). */
async function nextMessages(run: MeshSession): Promise<readonly InboxMessage[]> {
  for (;;) {
    const arrival = run.nextArrival();
    const batch = await run.take();
    if (batch.messages.length > 0) {
      await batch.confirm();
      return batch.messages;
    }
    await arrival;
  }
}

describe("crash-consistent task creation (task keys)", () => {
  const KEYS = ["quarterly-report", "billing-audit", "churn-study", "pricing-review", "backlog-triage"];
  const STEPS: DelegateStep[] = ["record-created", "key-written", "request-delivered", "marked-delivered"];
  const KILLS = 50;
  const LANES = 2;

  it(
    "after 50 SIGKILLs during delegations with task keys: no phantom key, no unmarked orphan record, and a fresh delegation per key reuses a live delivered task or creates one",
    async () => {
      const prefix = uniquePrefix();
      const tasks = { deliveryGraceMs: 1000 };
      const m = await suite.mesh(prefix, "gw1", { tasks });
      const killedAt: string[] = [];
      const ins = await inspect(suite.server, prefix);
      const kvm = new Kvm(ins.nc);
      const keyKv = await kvm.open(ins.names.taskKeyBucket());
      const taskKv = await kvm.open(ins.names.taskBucket());
      const taskExists = async (taskId: string) => (await taskKv.get(`gw1.gw1.${taskId}`))?.operation === "PUT";
      /** Key entries naming a task that does not exist. Entries are read before records and a named record is never removed, so this holds while the other lane works. */
      const phantoms = async () => {
        let n = 0;
        for await (const k of await keyKv.keys()) {
          const e = await keyKv.get(k);
          if (e?.operation === "PUT" && !(await taskExists(TaskKeyEntrySchema.parse(e.json()).taskId))) n++;
        }
        return n;
      };
      let phantomsAfterKills = 0;

      // Two lanes of delegating processes race on the same keys; each process is SIGKILLed either
      // while held at a chosen step of a chosen delegation, or after a varying number of steps
      // (the kill then lands wherever the process has got to).
      const lane = async (laneNo: number) => {
        for (let j = 0; j < KILLS / LANES; j++) {
          const i = laneNo * (KILLS / LANES) + j;
          const p = await SessionProcess.start({ url: suite.server.url, prefix, instance: "gw1", tasks });
          suite.cleanup(() => p.sigkill());
          p.send({ op: "open-run", sessionKey: `agent:orchestrator${i}:main` });
          await p.expect("run-open");
          const held = i % 2 === 0;
          const hangAt = { n: (i >> 1) % 3, step: STEPS[(i >> 2) % STEPS.length]! };
          const keys = KEYS.map((_, k) => KEYS[(k + i) % KEYS.length]!);
          p.send({ op: "delegate-loop", keys, agent: "analyst", count: 6, forceNewEvery: 3, ...(held && { hangAt }) });
          const stepsBeforeKill = 1 + ((i * 7) % 13);
          let steps = 0;
          for (;;) {
            const e = await p.next("a delegation step");
            if (e.ev === "error") throw new Error(`child ${i}: ${e.message}`);
            if (e.ev === "looped") {
              killedAt.push("after its loop");
              break;
            }
            if (e.ev === "hanging") {
              killedAt.push(`held at ${e.step}`);
              break;
            }
            if (e.ev === "step" && !held && ++steps >= stepsBeforeKill) {
              killedAt.push(`after ${steps} steps`);
              break;
            }
          }
          await p.sigkill();
          // Right after the kill, before any later delegation could replace what it left.
          phantomsAfterKills += await phantoms();
        }
      };
      await Promise.all(Array.from({ length: LANES }, (_, l) => lane(l)));
      expect(killedAt).toHaveLength(KILLS);
      expect(killedAt.filter((k) => k.startsWith("held at"))).toHaveLength(KILLS / 2);

      // What the crashes left: every key entry names a task that exists; every record either has
      // its request stored in the assignee's inbox or says it was not delivered.
      const requests = await storedIds(prefix, "gw1");
      const records = new Map<string, ReturnType<typeof TaskRecordSchema.parse>>();
      for await (const k of await taskKv.keys()) {
        const e = await taskKv.get(k);
        if (e?.operation !== "PUT") continue;
        const r = TaskRecordSchema.parse(e.json());
        records.set(r.taskId, r);
      }
      const phantomKeys = await phantoms();
      let orphanRecords = 0;
      let markedUndelivered = 0;
      for (const r of records.values()) {
        const stored = requests.has(ReservedIds.taskRequest(r.taskId));
        if (r.delivered === false) markedUndelivered++;
        else if (!stored) orphanRecords++;
      }
      const requestsWithoutRecord = [...requests.keys()].filter((id) => id.startsWith("tr-") && !records.has(id.slice(3))).length;
      const duplicateRequests = [...requests.values()].filter((n) => n > 1).length;
      console.info(
        `task-key crash loop: ${killedAt.length} kills (${killedAt.filter((k) => k.startsWith("held")).length} held at a step, ${killedAt.filter((k) => k.endsWith("steps")).length} after a varying number of steps, ${killedAt.filter((k) => k.endsWith("loop")).length} after their loop); ` +
          `${phantomsAfterKills} phantom keys seen right after the kills, ${phantomKeys} at the end; ${records.size} task records, ${markedUndelivered} marked undelivered, ${orphanRecords} orphan records, ` +
          `${requestsWithoutRecord} requests without a record, ${duplicateRequests} duplicate requests`,
      );
      expect({ phantomsAfterKills, phantomKeys, orphanRecords, requestsWithoutRecord, duplicateRequests }).toEqual({ phantomsAfterKills: 0, phantomKeys: 0, orphanRecords: 0, requestsWithoutRecord: 0, duplicateRequests: 0 });

      // A fresh delegation with each key: a live, delivered task, or a new one (delivered).
      const checker = await m.sessions.open("agent:checker:main");
      let reused = 0;
      for (const key of KEYS) {
        const out = await checker.delegate({ message: `check ${key}`, taskKey: { key, agent: "analyst", instance: "gw1" } });
        const record = await m.tasks.get(out.taskId);
        expect(record, key).toBeDefined();
        expect(record!.delivered, key).not.toBe(false);
        expect((await storedIds(prefix, "gw1")).get(ReservedIds.taskRequest(out.taskId)), key).toBe(1);
        expect((await m.sessions.get(out.assignee))?.resumable ?? true, key).toBe(true);
        if (out.reused) reused++;
      }
      console.info(`fresh delegations after the crash loop: ${reused} reused, ${KEYS.length - reused} created`);
      await checker.close();
    },
    240_000,
  );
});

describe("delegations refused at delivery", () => {
  it("removes the record of a delegation to an unknown instance; the same taskId then works towards a known session, and mesh_await never calls the failed one submitted", async () => {
    const prefix = uniquePrefix();
    const m = await suite.mesh(prefix, "gw1");
    const boss = await m.sessions.open("agent:boss:main");

    const err = await boss.delegate({ to: parseSessionKey("agent:worker:main", "gw-nowhere"), message: "the report", taskId: "report-1" }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UnknownInstanceError);
    expect(await m.tasks.get("report-1")).toBeUndefined();
    const awaited = await tool("mesh_await").execute({ taskIds: ["report-1"], timeoutSeconds: 0 }, { session: boss });
    expect(awaited.text).not.toContain("still submitted");
    expect(awaited.text).not.toContain("is alive");
    expect(awaited.text).toContain("report-1: no task with this id: it was never created, or its delegation failed (nobody is working on it)");

    const viaTool = await tool("mesh_delegate").execute({ sessionKey: "agent:worker:main", instance: "gw-nowhere", message: "the report", taskId: "report-2" }, { session: boss });
    expect(viaTool).toMatchObject({ ok: false, details: { error: "unknown_instance", delegated: false } });
    expect(viaTool.text).toContain("Nothing was delegated: no task exists and nobody is working on it");
    expect(await m.tasks.get("report-2")).toBeUndefined();

    const retry = await boss.delegate({ to: parseSessionKey("agent:worker:main", "gw1"), message: "the report", taskId: "report-1" });
    expect(retry).toMatchObject({ taskId: "report-1", reused: false, state: "submitted" });
    expect(await m.tasks.get("report-1")).toMatchObject({ state: "submitted", delivered: true, assignee: { instance: "gw1" } });
    const worker = await m.sessions.open("agent:worker:main");
    const requests = await nextMessages(worker);
    expect(requests.map((x) => [x.kind, x.taskId])).toEqual([[Kinds.taskRequest, "report-1"]]);
    const pending = await tool("mesh_await").execute({ taskIds: ["report-1"], timeoutSeconds: 0 }, { session: boss });
    expect(pending.text).toContain("report-1: still submitted at agent:worker:main");
    expect(pending.text).toContain("is alive: do not start a duplicate");
    await worker.complete({ taskId: "report-1", state: "completed", result: "done" });
    expect((await boss.await([{ taskId: "report-1" }], { timeoutMs: 30_000 })).done[0]).toMatchObject({ state: "completed", result: "done" });
    await Promise.all([worker.close(), boss.close()]);
  });

  it("removes the record of an oversize delegation, so the same taskId can be used again", async () => {
    const prefix = uniquePrefix();
    const m = await suite.mesh(prefix, "gw1", { maxMessageBytes: 2048 });
    const boss = await m.sessions.open("agent:boss:main");
    const to = parseSessionKey("agent:worker:main", "gw1");
    await expect(boss.delegate({ to, message: "x".repeat(4000), taskId: "big-1" })).rejects.toBeInstanceOf(PayloadTooLargeError);
    expect(await m.tasks.get("big-1")).toBeUndefined();
    expect(await boss.delegate({ to, message: "a short version", taskId: "big-1" })).toMatchObject({ taskId: "big-1", reused: false });
    expect(await m.tasks.get("big-1")).toMatchObject({ delivered: true });
    await boss.close();
  });

  it("reports a record left between its write and the request as being sent, then as not received; a retry with the same id delivers it once", async () => {
    const prefix = uniquePrefix();
    const m = await suite.mesh(prefix, "gw1", { tasks: { deliveryGraceMs: 500 } });
    const boss = await m.sessions.open("agent:boss:main");
    const to = parseSessionKey("agent:worker:main", "gw1");
    // The delegating process stops right after the record write (as a crash would leave it).
    const stopped = new Error("stopped after the record write");
    await expect(boss.delegate({ to, message: "the audit", taskId: "audit-1" }, { onStep: (step) => { if (step === "record-created") throw stopped; } })).rejects.toBe(stopped);
    expect(await m.tasks.get("audit-1")).toMatchObject({ state: "submitted", delivered: false });

    const text = async () => (await tool("mesh_await").execute({ taskIds: ["audit-1"], timeoutSeconds: 0 }, { session: boss })).text;
    const first = await text();
    expect(first).not.toContain("still submitted");
    // The grace is a rule about elapsed time: watch the text change when it has passed.
    const later = await until(async () => ((await text()).includes("NOT received") ? text() : undefined), "the undelivered task to be reported as not received");
    expect(later).toContain("audit-1: NOT received: its request never reached agent:worker:main (the delegation failed); nobody is working on it");
    expect(later).not.toContain("is alive");

    const retry = await boss.delegate({ to, message: "the audit", taskId: "audit-1" });
    expect(retry).toMatchObject({ taskId: "audit-1", reused: false, state: "submitted" });
    expect(await m.tasks.get("audit-1")).toMatchObject({ delivered: true });
    expect((await storedIds(prefix, "gw1")).get(ReservedIds.taskRequest("audit-1"))).toBe(1);
    await boss.close();
  });
});

describe("a requester whose inbox is full", () => {
  it("gets the decision back with the notification pending, lets a new assignee mesh connect, and receives the completion once when room appears", async () => {
    const prefix = uniquePrefix();
    const retry = { notifyRetryMinMs: 50, notifyRetryMaxMs: 400 };
    const req = await suite.mesh(prefix, "gw-req", { retention: { maxMessages: 3 } });
    const work = await suite.mesh(prefix, "gw-work", { tasks: retry });
    const boss = await req.sessions.open("agent:boss:main");
    const t = await boss.delegate({ to: parseSessionKey("agent:worker:main", "gw-work"), message: "the report" });

    // Fill the requester's inbox until its stream refuses.
    const fillers: number[] = [];
    for (;;) {
      const sent = await req.send({ from: "agent:filler:main", to: "agent:boss:main", body: `filler ${fillers.length}` }).catch((e: unknown) => e);
      if (sent instanceof StreamRefusedError) break;
      fillers.push((sent as { seq: number }).seq);
    }
    expect(fillers).toHaveLength(3);

    const worker = await work.sessions.open("agent:worker:main");
    expect((await nextMessages(worker)).map((x) => x.taskId)).toEqual([t.taskId]);
    const out = await worker.complete({ taskId: t.taskId, state: "completed", result: "the numbers" });
    expect(out).toMatchObject({ outcome: "finished", notified: false, notification: "pending", record: { state: "completed" } });
    expect(await req.tasks.get(t.taskId)).toMatchObject({ state: "completed", notified: false });
    expect(work.tasks.pendingNotifications()).toEqual([
      expect.objectContaining({ taskId: t.taskId, state: "completed", requester: "agent:boss:main", requesterInstance: "gw-req", lastError: expect.stringMatching(/^stream_refused: /) }),
    ]);
    const told = await tool("mesh_complete").execute({ taskId: t.taskId, status: "completed", result: "the numbers" }, { session: worker });
    expect(told.details).toMatchObject({ outcome: "already", notification: "pending" });
    expect(told.text).toContain("could NOT be notified yet (its inbox is full or unreachable); the outcome is recorded, and the mesh keeps retrying in the background");

    // Another process of the assignee's instance connects: its recovery cannot deliver either, and
    // connecting neither fails nor waits for it.
    const again = await suite.mesh(prefix, "gw-work", { tasks: retry });
    expect(await again.tasks.recover()).toEqual([]);
    expect(again.tasks.pendingNotifications().map((p) => p.taskId)).toEqual([t.taskId]);
    const ins = await inspect(suite.server, prefix);
    const completions = () => ins.storedInbox("gw-req", ins.names.inboxSubject(boss.address, "gw-work", Kinds.taskComplete));
    expect(await completions()).toBe(0);

    // Room appears: the requester is shown its messages and confirms them, and they are removed
    // (limits retention keeps confirmed messages until max_age; an operator deletes them here).
    const shown = await nextMessages(boss);
    expect(shown.map((x) => x.body)).toEqual(["filler 0", "filler 1", "filler 2"]);
    const stream = ins.names.inboxStream("gw-req");
    for (const seq of fillers) await ins.jsm.streams.deleteMessage(stream, seq);

    // Nothing more is called: the background retries deliver it, and the requester sees it once.
    const arrived = await nextMessages(boss);
    expect(arrived.map((x) => [x.kind, x.taskId, (x.body as { result?: unknown }).result])).toEqual([[Kinds.taskComplete, t.taskId, "the numbers"]]);
    await until(async () => ((await req.tasks.get(t.taskId))?.notified ? true : undefined), "the record to be marked notified");
    await until(async () => (work.tasks.pendingNotifications().length + again.tasks.pendingNotifications().length === 0 ? true : undefined), "both notifiers to be done");
    expect(await completions()).toBe(1);
    expect((await boss.take()).messages).toEqual([]);
    await Promise.all([worker.close(), boss.close()]);
  });
});
