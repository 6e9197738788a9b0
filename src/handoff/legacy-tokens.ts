/**
 * Recognising the legacy silent-reply tokens in model output (the rule is written out in
 * subjects.md, "Legacy tokens"). Structured `action` fields are the real interface; this exists so
 * hosts and models that still write `REPLY_SKIP` amid chatter behave, and so a token never leaks
 * to a user's channel.
 */
import type { Action } from "../wire/index.js";

export const LEGACY_TOKENS = ["REPLY_SKIP", "ANNOUNCE_SKIP", "NO_REPLY"] as const;
export type LegacyToken = (typeof LEGACY_TOKENS)[number];

export interface ReplyClassification {
  /** Counted tokens, in order of appearance. */
  readonly tokens: readonly LegacyToken[];
  /** The deliverable text: counted tokens removed and the rest tidied (unchanged when none counted). */
  readonly text: string;
  /** A counted REPLY_SKIP or NO_REPLY: deliver nothing. */
  readonly skip: boolean;
  /** A counted ANNOUNCE_SKIP: no announce. */
  readonly suppressAnnounce: boolean;
}

const TOKEN_RE = /REPLY_SKIP|ANNOUNCE_SKIP|NO_REPLY/g;
const EMPHASIS = new Set(["*", "_", "~"]);
const WORD = /[\p{L}\p{N}_]/u;

type Range = readonly [number, number];

/** Spans where tokens never count: fenced code, inline code, URLs. */
function protectedRanges(text: string): Range[] {
  const ranges: Range[] = [];
  // Fenced blocks: a line starting with ``` or ~~~ up to the matching fence line (or the end).
  const fence = /^(```|~~~)[^\n]*\n[\s\S]*?(?:^\1[^\n]*$|(?![\s\S]))/gm;
  for (const m of text.matchAll(fence)) ranges.push([m.index, m.index + m[0].length]);
  // Inline code: a run of N backticks up to the next run of exactly N.
  const ticks = /`+/g;
  for (let m = ticks.exec(text); m; m = ticks.exec(text)) {
    if (inside(ranges, m.index)) continue;
    const run = m[0];
    const close = new RegExp(`(?<!\`)${run}(?!\`)`, "g");
    close.lastIndex = m.index + run.length;
    const end = close.exec(text);
    if (!end) continue;
    ranges.push([m.index, end.index + run.length]);
    ticks.lastIndex = end.index + run.length;
  }
  // URLs: a whitespace-free run containing :// or starting with www.
  for (const m of text.matchAll(/\S+/g)) {
    if (m[0].includes("://") || /^[(<["']?www\./i.test(m[0])) ranges.push([m.index, m.index + m[0].length]);
  }
  return ranges;
}

function inside(ranges: readonly Range[], at: number): boolean {
  return ranges.some(([a, b]) => at >= a && at < b);
}

export function classifyReply(text: string): ReplyClassification {
  const guarded = protectedRanges(text);
  const tokens: LegacyToken[] = [];
  const cuts: Range[] = [];
  for (const m of text.matchAll(TOKEN_RE)) {
    const start = m.index;
    const end = start + m[0].length;
    if (inside(guarded, start)) continue;
    let i = start - 1;
    while (i >= 0 && EMPHASIS.has(text[i]!)) i--;
    let j = end;
    while (j < text.length && EMPHASIS.has(text[j]!)) j++;
    if ((i >= 0 && WORD.test(text[i]!)) || (j < text.length && WORD.test(text[j]!))) continue;
    tokens.push(m[0] as LegacyToken);
    // Emphasis marks go with the token only when they wrap it alone (`**REPLY_SKIP**`).
    const before = text.slice(i + 1, start);
    const after = text.slice(end, j);
    cuts.push(before.length > 0 && before === [...after].reverse().join("") ? [i + 1, j] : [start, end]);
  }
  if (tokens.length === 0) return { tokens, text, skip: false, suppressAnnounce: false };
  let out = "";
  let at = 0;
  for (const [a, b] of cuts) {
    out += text.slice(at, a);
    at = b;
  }
  out += text.slice(at);
  return {
    tokens,
    text: tidy(out),
    skip: tokens.some((t) => t === "REPLY_SKIP" || t === "NO_REPLY"),
    suppressAnnounce: tokens.includes("ANNOUNCE_SKIP"),
  };
}

/** Close the gaps a removed token leaves; indentation and line structure stay. */
function tidy(s: string): string {
  return s
    .split("\n")
    .map((line) => line.replace(/(?<=\S)[ \t]{2,}/g, " ").replace(/(?<=\S) +(?=[.,!?;:])/g, "").trimEnd())
    .join("\n")
    .replace(/\n{3,}/g, "\n\n")
    .trim();
}

/** The action a reply really asks for, combining a structured request with legacy tokens in its text. */
export function resolveReplyAction(text: string, requested: Action = "reply"): { action: Action; text: string; tokens: readonly LegacyToken[] } {
  const c = classifyReply(text);
  if (c.skip) return { action: "skip", text: c.text, tokens: c.tokens };
  if (c.suppressAnnounce && requested === "announce") return { action: "reply", text: c.text, tokens: c.tokens };
  return { action: requested, text: c.text, tokens: c.tokens };
}
