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
  ["~~ANNOUNCE_SKIP~~ ok", ["ANNOUNCE_SKIP"], "ok"],
  ["Success (REPLY_SKIP)", ["REPLY_SKIP"], "Success ()"],
  ["REPLY_SKIP!", ["REPLY_SKIP"], "!"],
  ["Result received: REPLY_SKIP.", ["REPLY_SKIP"], "Result received:."],
  ["👍REPLY_SKIP👍", ["REPLY_SKIP"], "👍👍"],
  ["- item one\n- REPLY_SKIP", ["REPLY_SKIP"], "- item one\n-"],
  ["> quoted\nNO_REPLY", ["NO_REPLY"], "> quoted"],
  ["Thanks. ANNOUNCE_SKIP REPLY_SKIP", ["ANNOUNCE_SKIP", "REPLY_SKIP"], "Thanks."],
  ["REPLY_SKIP REPLY_SKIP", ["REPLY_SKIP", "REPLY_SKIP"], ""],
  ["Got it,REPLY_SKIP,thanks", ["REPLY_SKIP"], "Got it,,thanks"],
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
  ["lowercase reply_skip is prose", [], "lowercase reply_skip is prose"],
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

  it("never leaves a counted token in the deliverable text", () => {
    for (const [reply] of TABLE) {
      const c = classifyReply(reply);
      // Whatever remains is re-checked by the same rule: nothing counts any more.
      expect(classifyReply(c.text).tokens, reply).toEqual([]);
    }
  });

  it("turns tokens into the structured action", () => {
    expect(resolveReplyAction("🎯 Result received. REPLY_SKIP", "announce")).toMatchObject({ action: "skip", text: "🎯 Result received." });
    expect(resolveReplyAction("Here it is. ANNOUNCE_SKIP", "announce")).toMatchObject({ action: "reply", text: "Here it is." });
    expect(resolveReplyAction("Here it is.", "announce")).toMatchObject({ action: "announce", text: "Here it is." });
    expect(resolveReplyAction("`REPLY_SKIP` is a token")).toMatchObject({ action: "reply" });
    expect(LEGACY_TOKENS).toEqual(["REPLY_SKIP", "ANNOUNCE_SKIP", "NO_REPLY"]);
  });
});
