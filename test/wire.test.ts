import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { PayloadTooLargeError } from "../src/index.js";
import { decodeEnvelope, encodeEnvelope, EnvelopeSchema, isPlainEnvelope, isPlainJson, isPlainSeenRecord, isPlainTaskRecord, SeenRecordSchema, TaskRecordSchema, type Envelope } from "../src/wire/index.js";

const base: Envelope = {
  v: 1,
  id: "e1",
  kind: "msg",
  from: { instance: "gw1", agent: "a", channel: "main", session: "" },
  to: { instance: "gw2", agent: "b", channel: "telegram", session: "direct:1" },
  body: { text: "hi" },
  sentAt: "2026-11-21T10:00:00.000Z",
};
const bytes = (s: string) => new TextEncoder().encode(s);

describe("wire envelope", () => {
  it("round-trips an envelope and keeps unknown later fields", () => {
    const withLater = { ...base, later: { field: "from a newer minor version" } };
    const decoded = decodeEnvelope(encodeEnvelope(withLater, 10_000), 10_000);
    expect(decoded.ok && decoded.envelope).toEqual(withLater);
  });

  it.each([
    ["too_large", bytes("x".repeat(200)), 100],
    ["invalid_utf8", new Uint8Array([0x22, 0xc3, 0x28, 0x22]), 100],
    ["invalid_json", bytes("{"), 100],
    ["unsupported_version", bytes(JSON.stringify({ ...base, v: 2 })), 10_000],
    ["invalid_envelope", bytes(JSON.stringify({ ...base, id: "" })), 10_000],
    ["invalid_envelope", bytes("[]"), 100],
    ["invalid_envelope", bytes("null"), 100],
  ] as const)("decodes bad bytes to a typed %s error without throwing", (code, data, limit) => {
    const decoded = decodeEnvelope(data, limit);
    expect(decoded.ok).toBe(false);
    if (!decoded.ok) expect(decoded.error.code).toBe(code);
  });

  it("survives pathologically deep nesting without throwing", () => {
    const deep = `${"[".repeat(100_000)}${"]".repeat(100_000)}`;
    const decoded = decodeEnvelope(bytes(`{"v":1,"body":${deep}}`), 1_000_000);
    expect(decoded.ok).toBe(false);
  });

  it("refuses to encode an envelope over the limit, naming the limit and the server's max_payload", () => {
    const big = { ...base, body: "x".repeat(5000) };
    expect(() => encodeEnvelope(big, 4096, 1_048_576)).toThrow(PayloadTooLargeError);
    expect(() => encodeEnvelope(big, 4096, 1_048_576)).toThrow(/mesh limit is 4096 bytes \(server max_payload is 1048576 bytes\)/);
  });

  it("requires every documented field", () => {
    for (const field of ["v", "id", "kind", "from", "to", "sentAt"] as const) {
      const { [field]: _omit, ...rest } = base;
      expect(EnvelopeSchema.safeParse(rest).success, field).toBe(false);
    }
  });
});

describe("the fast JSON check of a send's body", () => {
  const schema = z.json();
  // Values that JSON.stringify would silently change or drop, and that the schema refuses.
  const notJson = fc.oneof(
    fc.constantFrom(undefined, Number.NaN, Number.POSITIVE_INFINITY, () => 1, 1n, Symbol("s"), new Date(0), new Map(), [1, , 3]),
    fc.constant(new (class Point {
      x = 1;
    })()),
  );
  const values = fc.letrec((tie) => ({
    value: fc.oneof({ depthSize: "small" }, fc.jsonValue({ maxDepth: 2 }), notJson, fc.array(tie("value"), { maxLength: 4 }), fc.dictionary(fc.string({ maxLength: 4 }), tie("value"), { maxKeys: 4 })),
  })).value;

  it("accepts only what the schema accepts, and every plain JSON value", () => {
    fc.assert(
      fc.property(values, (v) => !isPlainJson(v) || schema.safeParse(v).success),
      { numRuns: 2000 },
    );
    // Every plain JSON value but one with an own "__proto__" key, which the schema drops (so it goes to the schema).
    const hasProtoKey = (v: unknown): boolean => typeof v === "object" && v !== null && (Object.hasOwn(v, "__proto__") || Object.values(v).some(hasProtoKey));
    fc.assert(fc.property(fc.jsonValue(), (v) => isPlainJson(v) === !hasProtoKey(v)));
  });

  it("refuses a cycle and nesting past its depth instead of overflowing the stack", () => {
    const cycle: Record<string, unknown> = {};
    cycle.self = cycle;
    expect(isPlainJson(cycle)).toBe(false);
    let deep: unknown = 1;
    for (let i = 0; i < 100_000; i++) deep = [deep];
    expect(isPlainJson(deep)).toBe(false);
  });
});

/**
 * A hand-written check that stands in for a schema on a hot path: whatever it accepts, the schema
 * accepts and outputs unchanged. It must also say yes often enough for the property to mean something.
 */
function agreesWithSchema(values: fc.Arbitrary<unknown>, fast: (v: unknown) => boolean, schema: z.ZodType, runs: number): void {
  let accepted = 0;
  fc.assert(
    fc.property(values, (v) => {
      if (!fast(v)) return true;
      accepted++;
      const parsed = schema.safeParse(v);
      return parsed.success && JSON.stringify(parsed.data) === JSON.stringify(v);
    }),
    { numRuns: runs },
  );
  expect(accepted).toBeGreaterThan(200);
}

describe("the fast envelope check of a read", () => {
  /** Mostly `valid`, sometimes `other`: each field is valid often enough for whole envelopes to be. */
  const usually = <T, U>(valid: fc.Arbitrary<T>, other: fc.Arbitrary<U>) => fc.oneof({ weight: 12, arbitrary: valid }, { weight: 1, arbitrary: other });
  const junk = fc.oneof(fc.constant(null), fc.integer(), fc.boolean(), fc.constant([]), fc.constant({}));
  const mostly = <T>(a: fc.Arbitrary<T>) => usually(a, junk);
  /** A field left out (JSON has no undefined) three times in four. */
  const ABSENT = Symbol("absent");
  const rarely = <T>(a: fc.Arbitrary<T>) => fc.oneof({ weight: 3, arbitrary: fc.constant(ABSENT) }, { weight: 1, arbitrary: mostly(a) });
  const present = (o: Record<string, unknown>) => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== ABSENT));

  const id = usually(fc.stringMatching(/^[A-Za-z0-9_-]{1,64}$/), fc.string({ maxLength: 70 }));
  const word = fc.stringMatching(/^[a-z][a-z0-9_-]{0,6}$/);
  const kind = usually(fc.array(word, { minLength: 1, maxLength: 4 }).map((w) => w.join(".")), fc.oneof(fc.array(word, { minLength: 5, maxLength: 5 }).map((w) => w.join(".")), fc.string({ maxLength: 12 })));
  const addressId = usually(fc.stringMatching(/^[a-z0-9][a-z0-9_-]{0,8}$/), fc.constantFrom("", "A", "-x", "x".repeat(64), "x".repeat(65)));
  const text = (max: number) => usually(fc.string({ minLength: 1, maxLength: 8 }), fc.constantFrom("", "x".repeat(max), "x".repeat(max + 1)));
  const address = fc
    .record({ instance: mostly(addressId), agent: mostly(addressId), channel: mostly(text(256)), session: mostly(usually(fc.string({ maxLength: 8 }), fc.constant("x".repeat(257)))), run: rarely(text(256)), thread: rarely(text(256)), extra: rarely(fc.string()) })
    .map(present);
  const sentAt = usually(
    fc.oneof(fc.date({ min: new Date(0), max: new Date(4e12), noInvalidDate: true }).map((d) => d.toISOString()), fc.constantFrom("2026-11-21T10:00:00+02:00", "2024-02-29T10:00:00.1Z")),
    fc.constantFrom("2026-11-21T10:00:00", "2026-02-29T10:00:00Z", "yesterday", ""),
  );
  const candidate = fc
    .record({
      v: usually(fc.constant(1), fc.constantFrom(2, "1", null, ABSENT)),
      id: usually(mostly(id), fc.constant(ABSENT)),
      kind: usually(mostly(kind), fc.constant(ABSENT)),
      from: usually(mostly(address), fc.constant(ABSENT)),
      to: usually(mostly(address), fc.constant(ABSENT)),
      correlationId: rarely(text(128)),
      taskId: rarely(text(128)),
      origin: rarely(fc.constant({ channel: "telegram", to: "1", session: base.from })),
      action: rarely(fc.constantFrom("reply", "skip", "announce", "shout")),
      // JSON.parse gives Infinity for 1e400; the schema refuses it.
      body: usually(fc.jsonValue({ maxDepth: 3 }), fc.constantFrom(Number.POSITIVE_INFINITY, ABSENT)),
      sentAt: usually(mostly(sentAt), fc.constant(ABSENT)),
      later: rarely(fc.jsonValue({ maxDepth: 1 })),
    })
    .map(present);

  it("accepts only what the schema accepts, and outputs what the schema outputs", () => {
    agreesWithSchema(candidate, isPlainEnvelope, EnvelopeSchema, 20_000);
  });

  it("leaves a body with an own __proto__ key (as JSON.parse makes it) to the schema, which drops the key", () => {
    const body = JSON.parse('{"": {"__proto__": 0}}') as unknown;
    expect(isPlainEnvelope({ ...base, body })).toBe(false);
    expect(isPlainJson(body)).toBe(false);
  });

  it("accepts every envelope the mesh writes without an origin", () => {
    expect(isPlainEnvelope(base)).toBe(true);
    expect(isPlainEnvelope({ ...base, correlationId: "c", taskId: "t", action: "skip", from: { ...base.from, run: "r", thread: "t" }, later: 1 })).toBe(true);
    expect(isPlainEnvelope({ ...base, origin: { channel: "telegram", to: "1", session: base.from } })).toBe(false);
    expect(isPlainEnvelope({ ...base, body: Number.POSITIVE_INFINITY })).toBe(false);
  });
});

describe("the fast check of a seen-log record", () => {
  const usually = <T, U>(valid: fc.Arbitrary<T>, other: fc.Arbitrary<U>) => fc.oneof({ weight: 10, arbitrary: valid }, { weight: 1, arbitrary: other });
  const ABSENT = Symbol("absent");
  const junk = fc.oneof(fc.constant(null), fc.constant(-1), fc.constant(1.5), fc.constant(2 ** 60), fc.string({ maxLength: 3 }), fc.constant([]), fc.constant({}));
  const present = (o: Record<string, unknown>) => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== ABSENT));
  const count = fc.oneof({ weight: 3, arbitrary: fc.constant(ABSENT) }, { weight: 3, arbitrary: fc.nat() }, { weight: 1, arbitrary: junk });
  const group = fc.record({ at: usually(fc.nat(), junk), ids: usually(fc.array(usually(fc.string({ maxLength: 12 }), junk), { maxLength: 6 }), junk) });
  const record = fc
    .record({
      v: usually(fc.constant(1), fc.constantFrom(2, ABSENT)),
      kind: usually(fc.constantFrom("delta", "snapshot"), fc.constantFrom("other", ABSENT)),
      groups: usually(fc.array(group, { maxLength: 4 }), fc.constantFrom(ABSENT, null)),
      through: count,
      base: count,
      part: count,
      of: count,
      w: fc.oneof({ weight: 3, arbitrary: fc.constant(ABSENT) }, { weight: 3, arbitrary: fc.string({ maxLength: 8 }) }, { weight: 1, arbitrary: junk }),
      ids: fc.oneof({ weight: 8, arbitrary: fc.constant(ABSENT) }, { weight: 1, arbitrary: fc.array(fc.string()) }),
      at: fc.oneof({ weight: 8, arbitrary: fc.constant(ABSENT) }, { weight: 1, arbitrary: fc.string() }),
    })
    .map(present);

  it("accepts only what the schema accepts, as the schema reads it", () => {
    agreesWithSchema(record, isPlainSeenRecord, SeenRecordSchema, 10_000);
  });
});

describe("the fast check of a task record", () => {
  const usually = <T, U>(valid: fc.Arbitrary<T>, other: fc.Arbitrary<U>) => fc.oneof({ weight: 14, arbitrary: valid }, { weight: 1, arbitrary: other });
  const ABSENT = Symbol("absent");
  const junk = fc.oneof(fc.constant(null), fc.integer(), fc.boolean(), fc.constant([]), fc.constant({}), fc.constant(ABSENT));
  const mostly = <T>(a: fc.Arbitrary<T>) => usually(a, junk);
  const rarely = <T>(a: fc.Arbitrary<T>) => fc.oneof({ weight: 3, arbitrary: fc.constant(ABSENT) }, { weight: 1, arbitrary: mostly(a) });
  const present = (o: Record<string, unknown>) => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== ABSENT));
  const text = (max: number) => usually(fc.string({ maxLength: 8 }), fc.constantFrom("x".repeat(max), "x".repeat(max + 1)));
  const address = fc
    .record({ instance: mostly(fc.string({ maxLength: 6 })), agent: mostly(fc.string({ maxLength: 6 })), channel: mostly(fc.string({ maxLength: 6 })), session: mostly(fc.string({ maxLength: 6 })), run: rarely(fc.string({ maxLength: 4 })), thread: rarely(fc.string({ maxLength: 4 })), extra: rarely(fc.string()) })
    .map(present);
  const at = usually(
    fc.date({ min: new Date(0), max: new Date(4e12), noInvalidDate: true }).map((d) => d.toISOString()),
    fc.constantFrom("2026-11-21T10:00:00+02:00", "2026-11-21T10:00:00", "2026-02-30T10:00:00Z", "now", ""),
  );
  const record = fc
    .record({
      v: usually(fc.constant(1), fc.constantFrom(2, "1", ABSENT)),
      taskId: mostly(usually(fc.stringMatching(/^[A-Za-z0-9_-]{1,60}$/), fc.constantFrom("", "a.b", "x".repeat(61)))),
      requester: mostly(address),
      assignee: mostly(address),
      state: mostly(fc.constantFrom("submitted", "working", "input-required", "completed", "failed", "canceled", "done")),
      title: rarely(text(500)),
      result: rarely(usually(fc.jsonValue({ maxDepth: 3 }), fc.constant(Number.POSITIVE_INFINITY))),
      error: rarely(text(4000)),
      createdAt: mostly(at),
      updatedAt: mostly(at),
      finishedBy: rarely(fc.string({ maxLength: 6 })),
      notified: usually(fc.boolean(), fc.constantFrom(ABSENT, "true", 1)),
      delivered: rarely(fc.boolean()),
      childSession: rarely(fc.boolean()),
      origin: rarely(fc.constant({ channel: "telegram", to: "1", session: base.from })),
      action: rarely(fc.constantFrom("reply", "skip", "announce", "shout")),
      announceTarget: rarely(fc.constant({ channel: "telegram", to: "1" })),
      announceVia: rarely(address),
      later: rarely(fc.jsonValue({ maxDepth: 1 })),
    })
    .map(present);

  it("accepts only what the schema accepts, and outputs what the schema outputs", () => {
    agreesWithSchema(record, isPlainTaskRecord, TaskRecordSchema, 20_000);
  });

  it("leaves an own __proto__ key (as JSON.parse makes it) to the schema", () => {
    const r = { v: 1, taskId: "t1", requester: base.from, assignee: base.to, state: "completed", createdAt: "2026-11-21T10:00:00.000Z", updatedAt: "2026-11-21T10:00:00.000Z", notified: false };
    expect(isPlainTaskRecord(r)).toBe(true);
    expect(isPlainTaskRecord(JSON.parse(JSON.stringify(r).replace("{", '{"__proto__":{"x":1},')))).toBe(false);
  });
});
