/**
 * Bytes <-> envelopes. Encoding refuses oversize messages before anything is published; decoding
 * never throws: it returns a typed failure a consumer can park.
 */
import { PayloadTooLargeError } from "../errors.js";
import { ActionSchema, ADDRESS_ID_RE, ENVELOPE_ID_RE, ENVELOPE_VERSION, EnvelopeSchema, KIND_RE, type Envelope } from "./envelope.js";
import { isPlainJson } from "./json.js";

export type WireErrorCode = "too_large" | "invalid_utf8" | "invalid_json" | "unsupported_version" | "invalid_envelope";

export interface WireError {
  readonly code: WireErrorCode;
  readonly detail: string;
}

export type Decoded = { readonly ok: true; readonly envelope: Envelope } | { readonly ok: false; readonly error: WireError };

const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

export function encodeEnvelope(envelope: Envelope, limit: number, serverMaxPayload?: number): Uint8Array {
  // Buffer.from takes small strings from Node's shared pool: about half the cost of
  // TextEncoder.encode per message sent, and less garbage.
  const bytes = Buffer.from(JSON.stringify(envelope), "utf8");
  if (bytes.length > limit) throw new PayloadTooLargeError(bytes.length, limit, serverMaxPayload);
  return bytes;
}

export function decodeEnvelope(data: Uint8Array, limit: number): Decoded {
  if (data.length > limit) return fail("too_large", `${data.length} bytes exceeds the mesh limit of ${limit} bytes`);
  let text: string;
  try {
    text = strictUtf8.decode(data);
  } catch {
    return fail("invalid_utf8", "body is not valid UTF-8");
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    return fail("invalid_json", err instanceof Error ? err.message : "unparseable JSON");
  }
  if (typeof json === "object" && json !== null && "v" in json && json.v !== ENVELOPE_VERSION) {
    return fail("unsupported_version", `envelope version ${JSON.stringify((json as { v: unknown }).v)}; this reader speaks ${ENVELOPE_VERSION}`);
  }
  // The common, well-formed envelope is checked by hand (zod cost a reader about as much CPU per
  // message as the rest of judging it); anything else goes through the schema, which decides and
  // words the error.
  if (isPlainEnvelope(json)) return { ok: true, envelope: json };
  try {
    const parsed = EnvelopeSchema.safeParse(json);
    if (!parsed.success) {
      const detail = parsed.error.issues
        .slice(0, 5)
        .map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`)
        .join("; ");
      return fail("invalid_envelope", detail);
    }
    return { ok: true, envelope: parsed.data };
  } catch (err) {
    // Pathological input (e.g. nesting deep enough to exhaust the stack) must not escape a consumer.
    return fail("invalid_envelope", err instanceof Error ? err.message : "schema check failed");
  }
}

/** The schema's own `sentAt` pattern, so both checks accept the same timestamps. */
const SENT_AT_RE = EnvelopeSchema.shape.sentAt._zod.pattern;
const ACTIONS: ReadonlySet<unknown> = new Set(ActionSchema.options);
const ADDRESS_KEYS: ReadonlySet<string> = new Set(["instance", "agent", "channel", "session", "run", "thread"]);

const text = (v: unknown, min: number, max: number) => typeof v === "string" && v.length >= min && v.length <= max;
const optionalText = (v: unknown, min: number, max: number) => v === undefined || text(v, min, max);

/** An address exactly as `AddressSchema` outputs it: its fields only (the schema drops any other, so those go to the schema). */
function isPlainAddress(v: unknown): boolean {
  if (typeof v !== "object" || v === null || Array.isArray(v)) return false;
  for (const key in v) if (!ADDRESS_KEYS.has(key)) return false;
  const a = v as Record<string, unknown>;
  return (
    typeof a.instance === "string" &&
    ADDRESS_ID_RE.test(a.instance) &&
    typeof a.agent === "string" &&
    ADDRESS_ID_RE.test(a.agent) &&
    text(a.channel, 1, 256) &&
    text(a.session, 0, 256) &&
    optionalText(a.run, 1, 256) &&
    optionalText(a.thread, 1, 256)
  );
}

/**
 * A parsed JSON value the schema would accept and output unchanged: every field checked as
 * `EnvelopeSchema` checks it. Conservative: an envelope with an `origin`, an address with extra
 * fields, a body the JSON check declines, returns false and is left to the schema. Accepting only
 * what the schema accepts is property-tested against it (`test/wire.test.ts`).
 */
export function isPlainEnvelope(json: unknown): json is Envelope {
  if (typeof json !== "object" || json === null || Array.isArray(json)) return false;
  const e = json as Record<string, unknown>;
  return (
    e.v === ENVELOPE_VERSION &&
    typeof e.id === "string" &&
    ENVELOPE_ID_RE.test(e.id) &&
    typeof e.kind === "string" &&
    KIND_RE.test(e.kind) &&
    isPlainAddress(e.from) &&
    isPlainAddress(e.to) &&
    optionalText(e.correlationId, 1, 128) &&
    optionalText(e.taskId, 1, 128) &&
    e.origin === undefined &&
    (e.action === undefined || ACTIONS.has(e.action)) &&
    Object.hasOwn(e, "body") &&
    isPlainJson(e.body) &&
    typeof e.sentAt === "string" &&
    SENT_AT_RE.test(e.sentAt)
  );
}

function fail(code: WireErrorCode, detail: string): Decoded {
  return { ok: false, error: { code, detail } };
}
