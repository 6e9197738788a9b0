/** Reading OpenClaw's run messages (as hooks carry them): the one place that knows their shape. */

export interface AssistantMessage {
  readonly role: "assistant";
  readonly content?: unknown;
  readonly stopReason?: unknown;
  readonly errorMessage?: unknown;
}

/** The last assistant message of a run's messages, if any. */
export function lastAssistantMessage(messages: readonly unknown[] | undefined): AssistantMessage | undefined {
  const list = messages ?? [];
  for (let i = list.length - 1; i >= 0; i--) {
    const m = list[i] as { role?: unknown } | null;
    if (m && typeof m === "object" && m.role === "assistant") return m as AssistantMessage;
  }
  return undefined;
}

/** The text of a message's content (a string, or the text parts of a content array). */
export function textOfContent(content: unknown): string {
  if (typeof content === "string") return content;
  if (!Array.isArray(content)) return "";
  return content.map((p: { text?: unknown } | null) => (p && typeof p.text === "string" ? p.text : "")).join("");
}
