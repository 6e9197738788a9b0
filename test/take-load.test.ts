/**
 * `take()` under load with a short pull expiry: it sees every stored message, once, and never
 * comes back empty while something deliverable is stored.
 */
import { describe, expect, it } from "vitest";
import { uniquePrefix } from "./harness/mesh.js";
import { useServer } from "./harness/suite.js";

const suite = useServer();

describe("take under load", () => {
  it("sees every stored message with a 1 s pull expiry while a producer keeps publishing, and is never empty while any is stored unseen", async () => {
    const prefix = uniquePrefix();
    const producer = await suite.mesh(prefix, "gw1");
    const reader = await suite.mesh(prefix, "gw1", { inbox: { fetchExpiresMs: 1000 } });
    const key = "agent:b:main";
    const inbox = await reader.sessions.openInbox(key);
    const N = 3000;
    const acked: string[] = [];
    let produced = false;
    const production = (async () => {
      let next = 0;
      await Promise.all(
        Array.from({ length: 32 }, async () => {
          while (next < N) {
            const i = next++;
            acked.push((await producer.send({ from: "agent:a:main", to: key, body: { i, pad: "x".repeat(200) } })).id);
          }
        }),
      );
      produced = true;
    })();

    const seen: string[] = [];
    let emptyAfterProduction = 0;
    while (seen.length < N) {
      const doneBefore = produced;
      const batch = await inbox.take({ max: 100 });
      if (batch.messages.length === 0 && doneBefore) emptyAfterProduction++;
      seen.push(...batch.messages.map((m) => m.id));
      await batch.confirm();
      if (emptyAfterProduction > 0) break;
      if (batch.messages.length === 0 && !doneBefore) await Promise.race([production, new Promise((r) => setImmediate(r))]);
    }
    await production;
    expect(emptyAfterProduction).toBe(0);
    expect(seen.length).toBe(N);
    expect(new Set(seen)).toEqual(new Set(acked));
    expect((await inbox.take()).messages).toEqual([]);
    await inbox.close();
  }, 120_000);

  it("returns a message acknowledged just before the take, every time (the consumer's pending count may lag the stream)", async () => {
    const prefix = uniquePrefix();
    const m = await suite.mesh(prefix, "gw1");
    const inbox = await m.sessions.openInbox("agent:b:main");
    let empty = 0;
    for (let i = 0; i < 300; i++) {
      const id = (await m.send({ from: "agent:a:main", to: "agent:b:main", body: i })).id;
      const batch = await inbox.take();
      if (batch.messages.length === 0) empty++;
      else expect(batch.messages.map((x) => x.id)).toEqual([id]);
      await batch.confirm();
      if (empty > 0) break;
    }
    expect(empty).toBe(0);
    await inbox.close();
  });
});
