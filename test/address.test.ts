import { describe, expect, it } from "vitest";
import fc from "fast-check";
import {
  MAX_SESSION_SUBJECT_BYTES,
  PUBLISH_LINE_HEADROOM,
  SERVER_MAX_CONTROL_LINE,
  decodeToken,
  encodeToken,
  isValidSubjectToken,
  parseSessionKey,
  sessionKeyOf,
  originalKeyOf,
  type SessionAddress,
} from "../src/address/index.js";
import { InvalidAddressError } from "../src/errors.js";
import { Names, sessionPath, sessionTokens } from "../src/topology/names.js";
import { keyOfSubjectBytes, longestKind } from "./fixtures/long-keys.js";

describe("session keys", () => {
  it.each([
    ["agent:main:main", { agent: "main", channel: "main", session: "" }],
    ["agent:main:direct:peer42", { agent: "main", channel: "direct", session: "peer42" }],
    ["agent:re-portal:telegram:direct:8035547811", { agent: "re-portal", channel: "telegram", session: "direct:8035547811" }],
    ["agent:ops:telegram:acct1:direct:99", { agent: "ops", channel: "telegram", session: "acct1:direct:99" }],
    ["agent:ops:discord:group:123", { agent: "ops", channel: "discord", session: "group:123" }],
    ["agent:ops:slack:channel:c1", { agent: "ops", channel: "slack", session: "channel:c1" }],
    ["agent:ops:telegram:group:-100123:topic:42", { agent: "ops", channel: "telegram", session: "group:-100123:topic:42" }],
    ["agent:main:subagent:3f2a", { agent: "main", channel: "subagent", session: "3f2a" }],
    ["agent:main:acp:77", { agent: "main", channel: "acp", session: "77" }],
    ["agent:main:dashboard:d1", { agent: "main", channel: "dashboard", session: "d1" }],
    ["agent:main:hook:gmail:abc", { agent: "main", channel: "hook", session: "gmail:abc" }],
    ["agent:main:explicit:x", { agent: "main", channel: "explicit", session: "x" }],
    ["agent:main:global", { agent: "main", channel: "global", session: "" }],
    ["agent:leasing-ops:cron:8babbec2", { agent: "leasing-ops", channel: "cron", session: "8babbec2" }],
  ])("parses %s", (key, want) => {
    const a = parseSessionKey(key, "gw1");
    expect(a).toMatchObject({ instance: "gw1", ...want });
    expect(a.run).toBeUndefined();
    expect(sessionKeyOf(a)).toBe(key);
  });

  it("folds a run-scoped cron key onto its durable session and keeps the run id", () => {
    const a = parseSessionKey("agent:leasing-ops:cron:8babbec2:run:e08e19ff", "gw1");
    expect(a).toMatchObject({ agent: "leasing-ops", channel: "cron", session: "8babbec2", run: "e08e19ff" });
    expect(sessionKeyOf(a)).toBe("agent:leasing-ops:cron:8babbec2");
    expect(originalKeyOf(a)).toBe("agent:leasing-ops:cron:8babbec2:run:e08e19ff");
    const parent = parseSessionKey("agent:leasing-ops:cron:8babbec2", "gw1");
    expect(new Names("mesh").sessionFilter(a)).toBe(new Names("mesh").sessionFilter(parent));
  });

  it("folds at the first ':run:' so the durable key is never itself run-scoped", () => {
    const a = parseSessionKey("agent:x:cron:job:run:r1:run:r2", "gw1");
    expect(a).toMatchObject({ session: "job", run: "r1:run:r2" });
    expect(parseSessionKey(sessionKeyOf(a), "gw1").run).toBeUndefined();
  });

  it("keeps thread keys as sessions of their own, exposing the thread id", () => {
    const base = parseSessionKey("agent:main:discord:channel:c1", "gw1");
    const thread = parseSessionKey("agent:main:discord:channel:c1:thread:t9", "gw1");
    expect(thread.thread).toBe("t9");
    expect(sessionTokens(thread)).not.toEqual(sessionTokens(base));
    expect(parseSessionKey("agent:main:main:thread:abc:16782", "gw1").thread).toBe("abc:16782");
  });

  it("lowercases the agent id as OpenClaw does, and keeps the rest as given", () => {
    const a = parseSessionKey("agent:Main:signal:group:AbC=", "gw1");
    expect(a.agent).toBe("main");
    expect(a.session).toBe("group:AbC=");
  });

  it("puts the instance in the address so one key on two gateways names two sessions", () => {
    const names = new Names("mesh");
    const a = parseSessionKey("agent:main:main", "gw-a");
    const b = parseSessionKey("agent:main:main", "gw-b");
    expect(names.sessionFilter(a)).not.toBe(names.sessionFilter(b));
  });

  it.each([
    ["", "starts with 'agent:"],
    ["main", "starts with 'agent:"],
    ["agent:", "missing the part after the agent id"],
    ["agent:main", "missing the part after the agent id"],
    ["agent:main:", "session part after the agent id is empty"],
    ["agent::main", "agent id"],
    ["agent:bad agent:main", "agent id"],
    ["agent:main::x", "channel segment"],
    ["agent:main:cron:job:run:", "run id after ':run:' is empty"],
    ["agent:main:cron::run:r1", "cron job id before ':run:' is empty"],
    ["agent:main:discord:c:thread:", "thread id after ':thread:' is empty"],
    [`agent:main:x:${"y".repeat(300)}`, "longer than 256"],
    ["agent:main:x:\uD800", "unpaired UTF-16 surrogate"],
  ])("rejects %j with a typed error saying what is wrong", (key, reason) => {
    let caught: unknown;
    try {
      parseSessionKey(key, "gw1");
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(InvalidAddressError);
    expect((caught as InvalidAddressError).message).toContain(reason);
    expect((caught as InvalidAddressError).code).toBe("invalid_address");
  });

  it("rejects instance ids that could not sit in a subject", () => {
    expect(() => parseSessionKey("agent:main:main", "GW.1")).toThrow(InvalidAddressError);
    expect(() => parseSessionKey("agent:main:main", "")).toThrow(/instance id/);
  });
});

const anyText = fc.oneof(
  fc.string({ unit: "grapheme", maxLength: 24 }),
  fc.string({ unit: fc.constantFrom(".", "*", ">", " ", "\t", "=", ":", "_", "-", "a", "Z", "0", "é", "🦞", "\n"), maxLength: 24 }),
  fc.string({ unit: "binary", maxLength: 12 }),
);

describe("token encoding (property)", () => {
  it("round-trips any well-formed string and always yields a valid subject token", () => {
    fc.assert(
      fc.property(anyText, (s) => {
        const t = encodeToken(s);
        expect(isValidSubjectToken(t)).toBe(true);
        expect(/^[A-Za-z0-9_=-]+$/.test(t)).toBe(true);
        expect(decodeToken(t)).toBe(s);
      }),
      { numRuns: 5000 },
    );
  });

  it("is injective: distinct strings never share a token", () => {
    fc.assert(
      fc.property(anyText, anyText, (a, b) => {
        fc.pre(a !== b);
        expect(encodeToken(a)).not.toBe(encodeToken(b));
      }),
      { numRuns: 5000 },
    );
  });

  it("leaves plain identifiers readable", () => {
    expect(encodeToken("re-portal")).toBe("re-portal");
    expect(encodeToken("direct:8035547811")).toBe("direct=3A8035547811");
    expect(encodeToken("")).toBe("=");
  });
});

describe("session keys the server can carry", () => {
  const cjk512 = `agent:main:${"漢".repeat(256)}:${"語".repeat(256)}`;

  it("refuses a key of 512 CJK characters at parse time, naming the limit and the key's size in subject form", () => {
    let err: unknown;
    try {
      parseSessionKey(cjk512, "gw1");
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(InvalidAddressError);
    const size = "main".length + 1 + 256 * 9 + 1 + 256 * 9;
    expect((err as Error).message).toContain(`${size} bytes`);
    expect((err as Error).message).toContain(`limit is ${MAX_SESSION_SUBJECT_BYTES} bytes`);
    expect((err as Error).message).toContain(`max_control_line of ${SERVER_MAX_CONTROL_LINE} bytes`);
  });

  it("accepts a key right at the limit, round-trips it, and fits its longest subject in the control line with room for the publish line", () => {
    const key = keyOfSubjectBytes(MAX_SESSION_SUBJECT_BYTES);
    const a = parseSessionKey(key, "i".repeat(64));
    expect(sessionKeyOf(a)).toBe(key);
    expect(sessionPath(a)).toHaveLength(MAX_SESSION_SUBJECT_BYTES);
    const names = new Names("p".repeat(32));
    const subject = names.inboxSubject(a, "f".repeat(64), longestKind);
    expect(subject).toHaveLength(SERVER_MAX_CONTROL_LINE - PUBLISH_LINE_HEADROOM);
    expect(names.parseInboxSubject(subject)).toMatchObject({ channel: a.channel, session: a.session, kind: longestKind });

    expect(() => parseSessionKey(keyOfSubjectBytes(MAX_SESSION_SUBJECT_BYTES + 1), "gw1")).toThrow(InvalidAddressError);
  });

  it("refuses to build an over-long subject for an address that did not come from the parser", () => {
    const handMade: SessionAddress = { instance: "gw1", agent: "main", channel: "漢".repeat(256), session: "語".repeat(256) };
    expect(() => new Names("mesh").inboxSubject(handMade, "gw2", "msg")).toThrow(InvalidAddressError);
  });
});

describe("session addresses (property)", () => {
  const segment = fc.oneof(anyText, fc.constantFrom("", "run", "thread", "cron", "main"));
  const keyArb = fc
    .tuple(
      fc.stringMatching(/^[a-z0-9][a-z0-9_-]{0,10}$/),
      fc.array(segment, { minLength: 1, maxLength: 6 }),
    )
    .map(([agent, parts]) => `agent:${agent}:${parts.join(":")}`);

  it("parses every random key to a typed result: an address whose subject tokens are valid and reversible, or an InvalidAddressError", () => {
    const names = new Names("mesh");
    fc.assert(
      fc.property(keyArb, (key) => {
        let a: SessionAddress;
        try {
          a = parseSessionKey(key, "gw1");
        } catch (err) {
          expect(err).toBeInstanceOf(InvalidAddressError);
          return;
        }
        const subject = names.inboxSubject(a, "gw2", "msg");
        const tokens = subject.split(".");
        expect(tokens).toHaveLength(8);
        for (const t of tokens) expect(isValidSubjectToken(t)).toBe(true);
        const back = names.parseInboxSubject(subject);
        expect(back).toMatchObject({ toInstance: "gw1", fromInstance: "gw2", agent: a.agent, channel: a.channel, session: a.session, kind: "msg" });
        // The durable key round-trips through the address.
        const again = parseSessionKey(sessionKeyOf(a), "gw1");
        expect(sessionTokens(again)).toEqual(sessionTokens(a));
      }),
      { numRuns: 5000 },
    );
  });

  it("maps distinct durable sessions to distinct subject filters", () => {
    const names = new Names("mesh");
    fc.assert(
      fc.property(keyArb, keyArb, (k1, k2) => {
        let a: SessionAddress, b: SessionAddress;
        try {
          a = parseSessionKey(k1, "gw1");
          b = parseSessionKey(k2, "gw1");
        } catch {
          return;
        }
        fc.pre(sessionKeyOf(a) !== sessionKeyOf(b));
        expect(names.sessionFilter(a)).not.toBe(names.sessionFilter(b));
        expect(names.sessionConsumer(a)).not.toBe(names.sessionConsumer(b));
      }),
      { numRuns: 3000 },
    );
  });
});
