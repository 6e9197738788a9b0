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
  /** Signalling tokens (normalised to upper case), in order of appearance: these decide the action. */
  readonly tokens: readonly LegacyToken[];
  /** The deliverable text: signalling and struck-through tokens removed, mentions quoted as code (unchanged when none). */
  readonly text: string;
  /** A signalling REPLY_SKIP or NO_REPLY: deliver nothing. */
  readonly skip: boolean;
  /** A signalling ANNOUNCE_SKIP: no announce. */
  readonly suppressAnnounce: boolean;
  /** Tokens written inside prose (not at an edge, not on a line of their own): kept, quoted as code, no effect. */
  readonly mentions: readonly LegacyToken[];
  /** Struck-through tokens (`~~REPLY_SKIP~~`): withdrawn by the writer, removed, no effect. */
  readonly struck: readonly LegacyToken[];
}

const TOKEN_RE = /REPLY_SKIP|ANNOUNCE_SKIP|NO_REPLY/gi;
const EMPHASIS = new Set(["*", "_", "~"]);
const WORD = /[\p{L}\p{N}_]/u;
/** What makes text content: a letter or a digit. Everything else (spaces, punctuation, emoji, markup) is not. */
const CONTENT = /[\p{L}\p{N}]/u;
/** A bare domain followed by a path (`example.test/NO_REPLY`): a URL without its scheme. */
const BARE_DOMAIN_PATH = /^[(<["']?(?:[\p{L}\p{N}-]+\.)+[\p{L}]{2,}(?::\d+)?\//iu;

type Range = readonly [number, number];

/** Spans where tokens never count: fenced code, inline code, URLs (with a scheme, `www.`, or a bare domain with a path). */
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
  // URLs: a whitespace-free run containing :// or starting with www. or with a bare domain and a path.
  for (const m of text.matchAll(/\S+/g)) {
    if (m[0].includes("://") || /^[(<["']?www\./i.test(m[0]) || BARE_DOMAIN_PATH.test(m[0])) ranges.push([m.index, m.index + m[0].length]);
  }
  return ranges;
}

function inside(ranges: readonly Range[], at: number): boolean {
  return ranges.some(([a, b]) => at >= a && at < b);
}

interface Candidate {
  readonly token: LegacyToken;
  /** The token itself. */
  readonly at: Range;
  /** The token with the emphasis marks on either side of it. */
  readonly wrapped: Range;
  /** The emphasis marks wrap only it, symmetrically (`**REPLY_SKIP**`). */
  readonly symmetric: boolean;
  readonly struck: boolean;
}

/** Every stand-alone token outside code and URLs (rules 1-3 of subjects.md, "Legacy tokens"). */
function candidates(text: string): Candidate[] {
  const guarded = protectedRanges(text);
  const out: Candidate[] = [];
  for (const m of text.matchAll(TOKEN_RE)) {
    const start = m.index;
    const end = start + m[0].length;
    if (inside(guarded, start)) continue;
    let i = start - 1;
    while (i >= 0 && EMPHASIS.has(text[i]!)) i--;
    let j = end;
    while (j < text.length && EMPHASIS.has(text[j]!)) j++;
    const prev = i >= 0 ? text[i]! : "";
    const next = j < text.length ? text[j]! : "";
    if (WORD.test(prev) || WORD.test(next)) continue;
    // A path segment (`a/NO_REPLY`, `NO_REPLY/b`) is part of a name, not a token.
    if (prev === "/" || prev === "\\" || next === "/" || next === "\\") continue;
    const before = text.slice(i + 1, start);
    const after = text.slice(end, j);
    out.push({
      token: m[0].toUpperCase() as LegacyToken,
      at: [start, end],
      wrapped: [i + 1, j],
      symmetric: before.length > 0 && before === [...after].reverse().join(""),
      struck: before.includes("~") && after.includes("~"),
    });
  }
  return out;
}

/** True when `text[a, b)` holds content (a letter or digit) outside the given spans. */
function hasContent(text: string, a: number, b: number, skip: readonly Range[]): boolean {
  for (let k = a; k < b; k++) {
    if (skip.some(([x, y]) => k >= x && k < y)) continue;
    if (CONTENT.test(text[k]!)) return true;
  }
  return false;
}

/**
 * Rule 4: a token signals when it stands at an edge: nothing but non-content (spaces, punctuation,
 * emoji, markup, other tokens) between it and the start of the reply, or the end of the reply, or
 * the start and the end of its own line.
 */
function signals(text: string, c: Candidate, all: readonly Candidate[]): boolean {
  // Other tokens are not content: `Thanks. ANNOUNCE_SKIP REPLY_SKIP` ends in two signals.
  const skip = all.map((x) => x.wrapped);
  const [s, e] = c.wrapped;
  if (!hasContent(text, 0, s, skip) || !hasContent(text, e, text.length, skip)) return true;
  const lineStart = text.lastIndexOf("\n", s - 1) + 1;
  const nl = text.indexOf("\n", e);
  const lineEnd = nl === -1 ? text.length : nl;
  return !hasContent(text, lineStart, s, skip) && !hasContent(text, e, lineEnd, skip);
}

export function classifyReply(text: string): ReplyClassification {
  const found = candidates(text);
  const none = { tokens: [], text, skip: false, suppressAnnounce: false, mentions: [], struck: [] };
  if (found.length === 0) return none;
  const tokens: LegacyToken[] = [];
  const mentions: LegacyToken[] = [];
  const struck: LegacyToken[] = [];
  // Edits in order: [from, to, replacement].
  const edits: [number, number, string][] = [];
  for (const c of found) {
    if (c.struck) {
      struck.push(c.token);
      edits.push([c.wrapped[0], c.wrapped[1], ""]);
    } else if (signals(text, c, found)) {
      tokens.push(c.token);
      // Emphasis marks go with the token only when they wrap it alone (`**REPLY_SKIP**`).
      edits.push(c.symmetric ? [c.wrapped[0], c.wrapped[1], ""] : [c.at[0], c.at[1], ""]);
    } else {
      mentions.push(c.token);
      edits.push([c.at[0], c.at[1], `\`${text.slice(c.at[0], c.at[1])}\``]);
    }
  }
  let out = "";
  let at = 0;
  for (const [a, b, r] of edits) {
    out += text.slice(at, a) + r;
    at = b;
  }
  out += text.slice(at);
  const removed = tokens.length + struck.length > 0;
  return {
    tokens,
    text: removed ? tidy(out) : out,
    skip: tokens.some((t) => t === "REPLY_SKIP" || t === "NO_REPLY"),
    suppressAnnounce: tokens.includes("ANNOUNCE_SKIP"),
    mentions,
    struck,
  };
}

/** True when the classification changed the text (a token removed or quoted). */
export function rewritten(c: ReplyClassification): boolean {
  return c.tokens.length + c.mentions.length + c.struck.length > 0;
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
  const action: Action = c.skip ? "skip" : c.suppressAnnounce && requested === "announce" ? "reply" : requested;
  return { action, text: c.text, tokens: c.tokens };
}

/** A handoff body (a reply's body, a completion's result) as it is stored: tokens stripped into an action. */
export interface ResolvedHandoff<B> {
  readonly body: B;
  /** The structured action: the requested one, or what a signalling token in a text body decided. */
  readonly action: Action;
  /** True when the text body held tokens (signalling, mentioned or struck) and was rewritten. */
  readonly rewritten: boolean;
}

/**
 * The one classify/strip/action step every handoff takes (replies and completions alike): a text
 * body is run through the legacy-token rule; any other body is kept, with the requested action.
 */
export function resolveHandoff<B>(body: B, requested: Action = "reply"): ResolvedHandoff<B | string> {
  if (typeof body !== "string") return { body, action: requested, rewritten: false };
  const c = classifyReply(body);
  const action: Action = c.skip ? "skip" : c.suppressAnnounce && requested === "announce" ? "reply" : requested;
  return { body: c.text, action, rewritten: rewritten(c) };
}

/**
 * What a received reply asks for: its envelope's action when the sender set one, else what its text
 * says under the same rule (a sender that predates structured actions). Tokens never reach a model.
 */
export function receivedReply<B>(body: B, action: Action | undefined): ResolvedHandoff<B | string> {
  if (action !== undefined) return { ...resolveHandoff(body, action), action };
  return resolveHandoff(body);
}
