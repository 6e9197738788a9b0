/**
 * Streams at their limits, on every supported server version: a full stream refuses new messages
 * with a typed error and keeps every one it acknowledged. nats-server before 2.10.6 acknowledges
 * and then evicts near a byte cap under `discard: new`; the mesh avoids the trigger there (count
 * caps only), so acknowledged == stored == surfaced everywhere.
 */
import { describe, expect, it } from "vitest";
import { StreamRefusedError } from "../src/index.js";
import { inspect, takeAll, uniquePrefix } from "./harness/mesh.js";
import { useServer } from "./harness/suite.js";

const suite = useServer();

describe("streams at their limits", () => {
  it("fills an inbox to its limit with mixed sizes: every acknowledged message is stored and surfaced once, the rest refused", async () => {
    const prefix = uniquePrefix();
    // Both caps set small: on 2.10.6+ the byte cap binds first; below it only the count cap exists.
    const m = await suite.mesh(prefix, "gw1", { retention: { maxBytes: 16 * 1024, maxMessages: 40 }, maxMessageBytes: 2048 });
    const acknowledged: string[] = [];
    const refusals: unknown[] = [];
    // Descending sizes: the pattern that made 2.9.10 evict under a byte cap.
    for (let i = 0; i < 120; i++) {
      const body = "x".repeat(Math.max(10, 1500 - i * 12));
      await m.send({ from: "agent:a:main", to: "agent:b:main", body }).then(
        (d) => acknowledged.push(d.id),
        (err: unknown) => refusals.push(err),
      );
    }
    expect(refusals.length).toBeGreaterThan(0);
    for (const err of refusals) {
      expect(err).toBeInstanceOf(StreamRefusedError);
      expect((err as StreamRefusedError).code).toBe("stream_refused");
    }
    const ins = await inspect(suite.server, prefix);
    expect(await ins.storedInbox("gw1")).toBe(acknowledged.length);

    const inbox = await m.sessions.openInbox("agent:b:main");
    const surfaced = await takeAll(inbox);
    await inbox.close();
    expect(surfaced).toEqual(acknowledged);
  });

  it("fills the parked stream to its limit: the take that cannot park gives its batch back, nothing is acknowledged, and the good message behind it is shown once when there is room", async () => {
    const prefix = uniquePrefix();
    const m = await suite.mesh(prefix, "gw1", { retention: { parkedMaxMessages: 1, parkedMaxBytes: 64 * 1024 } });
    const ins = await inspect(suite.server, prefix);
    const to = ins.address("agent:b:main", "gw1");
    const subject = ins.names.inboxSubject(to, "gw1", "msg");
    await ins.js.publish(subject, "garbage one");
    await ins.js.publish(subject, "garbage two");
    const good = await m.send({ from: "agent:a:main", to: "agent:b:main", body: "good" });
    const inbox = await m.sessions.openInbox("agent:b:main");
    const failed = await inbox.take().catch((e: unknown) => e);
    expect(failed).toMatchObject({ code: "take_failed" });
    expect((await ins.sessionConsumer(to))?.ack_floor.stream_seq).toBe(0);
    expect((await m.parked.list()).map((p) => p.reason)).toEqual(["invalid_json"]);

    // Room again (an operator removed the parked message): the garbage is parked, the good message shown.
    const [first] = await m.parked.list();
    await ins.jsm.streams.deleteMessage(ins.names.parkedStream("gw1"), first!.parkedSeq);
    const batch = await inbox.take();
    expect(batch.messages.map((x) => x.id)).toEqual([good.id]);
    await batch.confirm();
    expect((await inbox.take()).messages).toEqual([]);
    await inbox.close();
  });
});
