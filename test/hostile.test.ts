import { afterAll, beforeAll, describe, expect, it } from "vitest";
import fc from "fast-check";
import { parseSessionKey, type Mesh } from "../src/index.js";
import { decodeEnvelope } from "../src/wire/index.js";
import { meshTools } from "../src/tools/index.js";
import { startTestServer, type TestServer } from "./harness/server.js";
import { inspect, openMesh, removeTestStreams, takeAll, uniquePrefix } from "./harness/mesh.js";

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(async () => {
  await removeTestStreams(server);
  await server.dispose();
});

const utf8 = new TextEncoder();

/** Ten kinds of bad input a consumer must survive; each yields bytes for message n. */
function malformed(n: number, good: (id: string) => Record<string, unknown>): [Uint8Array, string] {
  const env = good(`bad${n}`);
  switch (n % 10) {
    case 0:
      return [utf8.encode(`not json ${n}`), "invalid_json"];
    case 1:
      return [new Uint8Array([0x7b, 0x22, 0xc3, 0x28, 0x22, 0x7d]), "invalid_utf8"];
    case 2:
      return [utf8.encode(JSON.stringify({ hello: n })), "invalid_envelope"];
    case 3:
      return [utf8.encode(JSON.stringify({ ...env, v: 2 })), "unsupported_version"];
    case 4:
      return [utf8.encode(JSON.stringify({ ...env, from: { ...(env.from as object), instance: "gw-forged" } })), "sender_mismatch"];
    case 5:
      return [utf8.encode(`{"v":1,"body":${"[".repeat(1500)}${"]".repeat(1500)}}`), "invalid_envelope"];
    case 6:
      return [utf8.encode(JSON.stringify({ ...env, id: "" })), "invalid_envelope"];
    case 7:
      return [utf8.encode(JSON.stringify({ ...env, to: { ...(env.to as object), agent: "someone-else" } })), "recipient_mismatch"];
    case 8:
      return [utf8.encode(JSON.stringify({ ...env, kind: "task.complete" })), "kind_mismatch"];
    default:
      return [utf8.encode("\u0000\u0001\u0002"), "invalid_json"];
  }
}

describe("hostile input", () => {
  it("parks 10,000 malformed messages without a crash, lists every one, and still delivers the good ones around them in order", async () => {
    const prefix = uniquePrefix();
    const m: Mesh = await openMesh(server, { prefix, instance: "gw1", retention: { parkedMaxBytes: 64 * 1024 * 1024 } });
    const to = parseSessionKey("agent:b:main", "gw1");
    const ins = await inspect(server, prefix);
    const subject = ins.names.inboxSubject(to, "gw1", "msg");
    const raw = (data: Uint8Array, msgID: string) => ins.js.publish(subject, data, { msgID, expect: { streamName: ins.names.inboxStream("gw1") } });
    const good = (id: string) => ({ v: 1, id, kind: "msg", from: parseSessionKey("agent:a:main", "gw1"), to, body: id, sentAt: new Date().toISOString() });
    const expectedReasons = new Map<string, number>();
    const goodIds: string[] = [];
    const pending: Promise<unknown>[] = [];
    for (let n = 0; n < 10_000; n++) {
      if (n % 100 === 0) {
        const id = `good${n}`;
        goodIds.push(id);
        pending.push(raw(utf8.encode(JSON.stringify(good(id))), id));
      }
      const [bytes, reason] = malformed(n, good);
      expectedReasons.set(reason, (expectedReasons.get(reason) ?? 0) + 1);
      pending.push(raw(bytes, `raw${n}`));
      if (pending.length >= 512) await Promise.all(pending.splice(0));
    }
    await Promise.all(pending);

    const inbox = await m.sessions.openInbox(to);
    const delivered = await takeAll(inbox);
    await inbox.close();
    expect(delivered).toEqual(goodIds);

    const parked = await m.parked.list(to);
    expect(parked).toHaveLength(10_000);
    const reasons = new Map<string, number>();
    for (const p of parked) reasons.set(p.reason, (reasons.get(p.reason) ?? 0) + 1);
    expect(reasons).toEqual(expectedReasons);
    await m.close();
  });

  it("refuses a raw message over the mesh limit at the stream, so it is never stored or shown", async () => {
    const prefix = uniquePrefix();
    const m = await openMesh(server, { prefix, instance: "gw1", maxMessageBytes: 4096 });
    const to = parseSessionKey("agent:b:main", "gw1");
    const ins = await inspect(server, prefix);
    const err = await ins.js.publish(ins.names.inboxSubject(to, "gw1", "msg"), new Uint8Array(8000), { msgID: "big" }).catch((e: unknown) => e);
    expect(String(err)).toMatch(/message size exceeds maximum allowed/i);
    expect(await ins.storedInbox("gw1")).toBe(0);
    await m.close();
  });
});

describe("hostile input (property)", () => {
  it("decodes any bytes to an envelope or a typed failure, never a throw", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 512 }), (bytes) => {
        const d = decodeEnvelope(bytes, 1024);
        expect(typeof d.ok).toBe("boolean");
        if (!d.ok) expect(d.error.code).toMatch(/^(too_large|invalid_utf8|invalid_json|unsupported_version|invalid_envelope)$/);
      }),
      { numRuns: 5000 },
    );
  });

  it("answers any JSON value given as tool parameters with a result, never a throw", async () => {
    const m = await openMesh(server, { prefix: uniquePrefix(), instance: "gw1" });
    const session = await m.sessions.open("agent:a:main");
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...meshTools), fc.jsonValue(), async (tool, params) => {
        const r = await tool.execute(params, { session });
        expect(typeof r.text).toBe("string");
        if (!r.ok) expect(r.details.error).toBeDefined();
      }),
      { numRuns: 500 },
    );
    await session.close();
    await m.close();
  });
});

describe("oversize publishes", () => {
  it("disconnects a raw publisher that goes over the server's max_payload, while a mesh client refuses before sending and stays connected", async () => {
    const { createConnection } = await import("node:net");
    const prefix = uniquePrefix();
    const m = await openMesh(server, { prefix, instance: "gw1", maxMessageBytes: 8 * 1024 * 1024 });
    const maxPayload = (await inspect(server, prefix)).nc.info!.max_payload;
    // The mesh caps its own limit below the server's max_payload and names both.
    const err = await m.send({ from: "agent:a:main", to: "agent:b:main", body: "x".repeat(maxPayload) }).catch((e: unknown) => e);
    expect(String(err)).toContain(`(server max_payload is ${maxPayload} bytes)`);

    // A raw client writing an oversize PUB is cut off by the server.
    const url = new URL(server.url);
    const said = await new Promise<string>((resolve) => {
      let text = "";
      const sock = createConnection({ host: url.hostname, port: Number(url.port) });
      sock.on("data", (d) => {
        // After the server's INFO, announce a message one byte over the limit.
        if (text === "") sock.write(`CONNECT {"verbose":false}\r\nPUB raw.big ${maxPayload + 1}\r\n`);
        text += d.toString();
      });
      sock.on("close", () => resolve(text));
      sock.on("error", () => undefined);
    });
    expect(said).toMatch(/Maximum Payload/i);

    // The mesh client was never disconnected by any of it.
    const ok = await m.send({ from: "agent:a:main", to: "agent:b:main", body: "still here" });
    expect(ok.seq).toBeGreaterThan(0);
    expect(m.isClosed).toBe(false);
    await m.close();
  });
});
