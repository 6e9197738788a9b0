/**
 * Reversible encoding of arbitrary strings into NATS subject tokens that are also valid KV key
 * segments and consumer-name parts.
 *
 * Rule: `[A-Za-z0-9_-]` stand for themselves; every other UTF-8 byte becomes `=HH` (uppercase hex);
 * the empty string is the lone token `=`. The output is never empty and never contains `.`, `*`,
 * `>` or whitespace. It is injective because `=` only ever appears as the start of an escape (or
 * alone, which no non-empty input produces), so decoding is unambiguous.
 */
import { InvalidAddressError } from "../errors.js";

const LITERAL = /^[A-Za-z0-9_-]$/;
const ALL_LITERAL = /^[A-Za-z0-9_-]+$/;
const EMPTY = "=";
const utf8 = new TextEncoder();
const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

export function encodeToken(value: string): string {
  if (value.length === 0) return EMPTY;
  if (ALL_LITERAL.test(value)) return value; // the common case: ids, agent names, channels
  if (!value.isWellFormed()) throw new InvalidAddressError(value, "contains an unpaired UTF-16 surrogate");
  let out = "";
  for (const ch of value) {
    if (LITERAL.test(ch)) {
      out += ch;
      continue;
    }
    for (const byte of utf8.encode(ch)) out += `=${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

export function decodeToken(token: string): string {
  if (token === EMPTY) return "";
  if (ALL_LITERAL.test(token)) return token; // literal characters are ASCII: they stand for themselves
  const bytes: number[] = [];
  for (let i = 0; i < token.length; ) {
    const ch = token[i]!;
    if (ch === "=") {
      const hex = token.slice(i + 1, i + 3);
      if (!/^[0-9A-F]{2}$/.test(hex)) throw new InvalidAddressError(token, `bad escape at offset ${i}`);
      bytes.push(Number.parseInt(hex, 16));
      i += 3;
    } else if (LITERAL.test(ch)) {
      bytes.push(ch.charCodeAt(0));
      i += 1;
    } else {
      throw new InvalidAddressError(token, `character ${JSON.stringify(ch)} cannot appear in an encoded token`);
    }
  }
  try {
    return strictUtf8.decode(new Uint8Array(bytes));
  } catch {
    throw new InvalidAddressError(token, "escapes do not form valid UTF-8");
  }
}

/** True when `token` is a usable NATS subject token (non-empty; no `.`, `*`, `>`, whitespace). */
export function isValidSubjectToken(token: string): boolean {
  return token.length > 0 && !/[.*>\s]/u.test(token);
}
