import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { PayloadTooLargeError } from "../src/index.js";
import { decodeEnvelope, encodeEnvelope, EnvelopeSchema, isPlainJson, type Envelope } from "../src/wire/index.js";

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
    fc.assert(fc.property(fc.jsonValue(), (v) => isPlainJson(v)));
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
