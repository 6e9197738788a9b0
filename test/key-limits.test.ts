import { describe, expect, it } from "vitest";
import { MAX_SESSION_SUBJECT_BYTES, SERVER_MAX_CONTROL_LINE } from "../src/address/index.js";
import { meshTools, sessionKeyOf, type Mesh, type MeshTool } from "../src/index.js";
import { useServer } from "./harness/suite.js";
import { inspect, uniquePrefix } from "./harness/mesh.js";
import { keyOfSubjectBytes, longestKind } from "./fixtures/long-keys.js";

const s = useServer();

const tool = (name: string): MeshTool => meshTools.find((t) => t.name === name)!;

/** Every status event of a mesh's connection from now on (a dropped connection shows as "disconnect"). */
function statusLog(mesh: Mesh): string[] {
  const log: string[] = [];
  void (async () => {
    for await (const st of mesh.status()) log.push(st.type);
  })();
  return log;
}

describe("session keys and the server's control line", () => {
  it("delivers to a key right at the limit under the longest prefix, instance ids and kind, and the connections stay up", async () => {
    const prefix = uniquePrefix().padEnd(32, "x");
    const from = "gw1-".padEnd(64, "a");
    const to = "gw2-".padEnd(64, "b");
    const sender = await s.mesh(prefix, from);
    const recipient = await s.mesh(prefix, to);
    const senderStatus = statusLog(sender);
    const recipientStatus = statusLog(recipient);
    const key = keyOfSubjectBytes(MAX_SESSION_SUBJECT_BYTES);

    const sent = await sender.send({ from: "agent:sender:main", to: { sessionKey: key, instance: to }, kind: longestKind, body: "it fits" });
    // A whole run: lease, watcher, session record, take, a reply back, close.
    const run = await recipient.sessions.open(key);
    const batch = await run.take();
    expect(batch.messages.map((m) => [m.id, m.kind, m.body])).toEqual([[sent.id, longestKind, "it fits"]]);
    expect(sessionKeyOf(batch.messages[0]!.to)).toBe(key);
    await batch.confirm();
    await run.reply(batch.messages[0]!, "received");
    await run.close();
    expect((await sender.sessions.get({ sessionKey: key, instance: to }))?.lifecycle).toBe("idle");

    expect(senderStatus).not.toContain("disconnect");
    expect(recipientStatus).not.toContain("disconnect");
    expect([...senderStatus, ...recipientStatus]).not.toContain("error");
  });

  it("answers mesh_send to a key of 512 CJK characters with the limit, writes nothing, and keeps the connection", async () => {
    const prefix = uniquePrefix();
    const m = await s.mesh(prefix, "gw1");
    const run = await m.sessions.open("agent:lead:main");
    s.cleanup(() => run.close());
    const status = statusLog(m);
    const ins = await inspect(s.server, prefix);
    const before = await ins.storedInbox("gw1");

    const r = await tool("mesh_send").execute({ sessionKey: `agent:main:${"漢".repeat(256)}:${"語".repeat(256)}`, message: "too long to address" }, { session: run });
    expect(r).toMatchObject({ ok: false, details: { error: "invalid_address" } });
    expect(r.text).toContain(`limit is ${MAX_SESSION_SUBJECT_BYTES} bytes`);
    expect(r.text).toContain(`max_control_line of ${SERVER_MAX_CONTROL_LINE} bytes`);
    expect(await ins.storedInbox("gw1")).toBe(before);

    // The same connection goes on working.
    const ok = await tool("mesh_send").execute({ sessionKey: "agent:other:main", message: "short enough" }, { session: run });
    expect(ok.ok).toBe(true);
    expect(await ins.storedInbox("gw1")).toBe(before + 1);
    expect(status).not.toContain("disconnect");
    expect(m.isClosed).toBe(false);
  });
});
