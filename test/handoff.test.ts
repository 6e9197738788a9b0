import { describe, expect, it } from "vitest";
import { classifyReply, resolveReplyAction, LEGACY_TOKENS } from "../src/handoff/index.js";

/** [model reply, counted tokens, deliverable text] — the rule is in subjects.md, "Legacy tokens". */
const TABLE: [string, string[], string][] = [
  ["REPLY_SKIP", ["REPLY_SKIP"], ""],
  ["NO_REPLY", ["NO_REPLY"], ""],
  ["ANNOUNCE_SKIP", ["ANNOUNCE_SKIP"], ""],
  ["🎯 Result received. REPLY_SKIP", ["REPLY_SKIP"], "🎯 Result received."],
  ["REPLY_SKIP — nothing to add here", ["REPLY_SKIP"], "— nothing to add here"],
  ["Done!\nREPLY_SKIP", ["REPLY_SKIP"], "Done!"],
  ["Delegation complete ✅\n\nREPLY_SKIP\n", ["REPLY_SKIP"], "Delegation complete ✅"],
  ["**REPLY_SKIP**", ["REPLY_SKIP"], ""],
  ["_NO_REPLY_", ["NO_REPLY"], ""],
  ["Success (REPLY_SKIP)", ["REPLY_SKIP"], "Success ()"],
  ["REPLY_SKIP!", ["REPLY_SKIP"], "!"],
  ["Result received: REPLY_SKIP.", ["REPLY_SKIP"], "Result received:."],
  ["👍REPLY_SKIP👍", ["REPLY_SKIP"], "👍👍"],
  ["- item one\n- REPLY_SKIP", ["REPLY_SKIP"], "- item one\n-"],
  ["> quoted\nNO_REPLY", ["NO_REPLY"], "> quoted"],
  ["Thanks. ANNOUNCE_SKIP REPLY_SKIP", ["ANNOUNCE_SKIP", "REPLY_SKIP"], "Thanks."],
  ["REPLY_SKIP REPLY_SKIP", ["REPLY_SKIP", "REPLY_SKIP"], ""],
  ["**Done** REPLY_SKIP", ["REPLY_SKIP"], "**Done**"],
  ["\tREPLY_SKIP\t", ["REPLY_SKIP"], ""],
  ["Über gut — NO_REPLY", ["NO_REPLY"], "Über gut —"],
  // Not counted: inside another word.
  ["REPLY_SKIPPED the step", [], "REPLY_SKIPPED the step"],
  ["NO_REPLY_2 is a variable", [], "NO_REPLY_2 is a variable"],
  ["XREPLY_SKIP", [], "XREPLY_SKIP"],
  ["preNO_REPLY", [], "preNO_REPLY"],
  ["éREPLY_SKIP", [], "éREPLY_SKIP"],
  // Not counted: code spans and fenced code.
  ["Use `REPLY_SKIP` to stay quiet", [], "Use `REPLY_SKIP` to stay quiet"],
  ["``NO_REPLY`` is the token", [], "``NO_REPLY`` is the token"],
  ["```\nREPLY_SKIP\n```", [], "```\nREPLY_SKIP\n```"],
  ["See:\n~~~\nANNOUNCE_SKIP\n~~~\nthen go", [], "See:\n~~~\nANNOUNCE_SKIP\n~~~\nthen go"],
  // Not counted: URLs.
  ["Docs: https://docs.example.test/REPLY_SKIP", [], "Docs: https://docs.example.test/REPLY_SKIP"],
  ["www.example.test/NO_REPLY is gone", [], "www.example.test/NO_REPLY is gone"],
  ["https://x.test/?q=REPLY_SKIP&NO_REPLY", [], "https://x.test/?q=REPLY_SKIP&NO_REPLY"],
  // Mixed: a code span does not shield a bare token elsewhere.
  ["`REPLY_SKIP` means quiet, so: REPLY_SKIP", ["REPLY_SKIP"], "`REPLY_SKIP` means quiet, so:"],
  // Any case: recognised like the upper-case token, so it never reaches a user verbatim.
  ["reply_skip", ["REPLY_SKIP"], ""],
  ["Reply_Skip", ["REPLY_SKIP"], ""],
  ["Got it. no_reply", ["NO_REPLY"], "Got it."],
  // Signalling needs an edge: the start or end of the reply, or a line of its own.
  ["News: revenue is up.\nREPLY_SKIP\nDetails follow.", ["REPLY_SKIP"], "News: revenue is up.\n\nDetails follow."],
  // Not a signal: a mention inside prose is kept, quoted as code, and decides nothing.
  ["I won't use REPLY_SKIP here because the user asked", [], "I won't use `REPLY_SKIP` here because the user asked"],
  ["Got it,REPLY_SKIP,thanks", [], "Got it,`REPLY_SKIP`,thanks"],
  ["lowercase reply_skip is prose", [], "lowercase `reply_skip` is prose"],
  ["The build passed.\nI won't use **NO_REPLY** since you asked.", [], "The build passed.\nI won't use **`NO_REPLY`** since you asked."],
  // Not a signal: struck through, the writer withdrew it; it is removed and the answer kept.
  ["~~REPLY_SKIP~~ Actually I do have an answer: 42.", [], "Actually I do have an answer: 42."],
  ["~~ANNOUNCE_SKIP~~ ok", [], "ok"],
  ["Here: ~NO_REPLY~ the numbers are final.", [], "Here: the numbers are final."],
  // Not counted: a path segment, with or without a scheme.
  ["example.test/NO_REPLY", [], "example.test/NO_REPLY"],
  ["See example.test/REPLY_SKIP for details", [], "See example.test/REPLY_SKIP for details"],
  ["src/NO_REPLY/index.ts changed", [], "src/NO_REPLY/index.ts changed"],
];

describe("legacy silent-reply tokens", () => {
  it("has a table of at least 30 model-style replies", () => {
    expect(TABLE.length).toBeGreaterThanOrEqual(30);
  });

  it.each(TABLE)("classifies %j", (reply, tokens, text) => {
    const c = classifyReply(reply);
    expect(c.tokens).toEqual(tokens);
    expect(c.text).toBe(text);
    expect(c.skip).toBe(tokens.includes("REPLY_SKIP") || tokens.includes("NO_REPLY"));
    expect(c.suppressAnnounce).toBe(tokens.includes("ANNOUNCE_SKIP"));
  });

  it("never leaves a bare token in the deliverable text: what remains is stable under the same rule", () => {
    for (const [reply] of TABLE) {
      const c = classifyReply(reply);
      // Whatever remains is re-checked by the same rule: no signal, mention or struck token is left.
      const again = classifyReply(c.text);
      expect([again.tokens, again.mentions, again.struck], reply).toEqual([[], [], []]);
      expect(again.text, reply).toBe(c.text);
    }
  });

  it("tells mentions and struck-through tokens apart from signals, and neither decides the action", () => {
    const mention = classifyReply("I won't use REPLY_SKIP here because the user asked");
    expect(mention).toMatchObject({ tokens: [], mentions: ["REPLY_SKIP"], struck: [], skip: false });
    const struck = classifyReply("~~REPLY_SKIP~~ Actually I do have an answer…");
    expect(struck).toMatchObject({ tokens: [], mentions: [], struck: ["REPLY_SKIP"], skip: false, text: "Actually I do have an answer…" });
    expect(resolveReplyAction("~~REPLY_SKIP~~ Actually I do have an answer…")).toMatchObject({ action: "reply", text: "Actually I do have an answer…" });
    expect(resolveReplyAction("I won't use REPLY_SKIP here because the user asked", "announce")).toMatchObject({ action: "announce" });
    expect(resolveReplyAction("Noted, will do. reply_skip")).toMatchObject({ action: "skip", text: "Noted, will do." });
  });

  it("turns tokens into the structured action", () => {
    expect(resolveReplyAction("🎯 Result received. REPLY_SKIP", "announce")).toMatchObject({ action: "skip", text: "🎯 Result received." });
    expect(resolveReplyAction("Here it is. ANNOUNCE_SKIP", "announce")).toMatchObject({ action: "reply", text: "Here it is." });
    expect(resolveReplyAction("Here it is.", "announce")).toMatchObject({ action: "announce", text: "Here it is." });
    expect(resolveReplyAction("`REPLY_SKIP` is a token")).toMatchObject({ action: "reply" });
    expect(LEGACY_TOKENS).toEqual(["REPLY_SKIP", "ANNOUNCE_SKIP", "NO_REPLY"]);
  });
});
