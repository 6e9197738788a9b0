/**
 * A scripted OpenAI-compatible model for driving a real OpenClaw gateway without an LLM. Each
 * turn's user text carries `SCRIPT=<name>`; the script sees the conversation so far and answers
 * with tool calls or final text. Every request is recorded for assertions.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

export interface ChatMessage {
  readonly role: string;
  readonly content?: unknown;
  readonly tool_calls?: { id: string; function: { name: string; arguments: string } }[];
  readonly tool_call_id?: string;
}

export interface ModelRequest {
  readonly at: number;
  readonly messages: readonly ChatMessage[];
  readonly tools: readonly string[];
  /** The model id the request named (the primary, or a fallback after a failover). */
  readonly model: string;
  /** The HTTP status the model answered with instead of a completion (a provider error), if any. */
  readonly failedWith?: number;
}

export type ScriptStep = { text: string } | { calls: { name: string; args: Record<string, unknown> }[] };

/** A script gets the request and how many model steps this turn has taken; returns the next step. */
export type Script = (req: ModelRequest, step: number) => ScriptStep | Promise<ScriptStep>;

export function textOf(content: unknown): string {
  if (typeof content === "string") return content;
  if (Array.isArray(content)) return content.map((p: { text?: string }) => p?.text ?? "").join("");
  return "";
}

const INTERNAL = "<<<BEGIN_OPENCLAW_INTERNAL_CONTEXT>>>";

/** The last user message that a person (not OpenClaw's internal context) wrote. */
export function lastUserText(messages: readonly ChatMessage[]): string {
  for (let i = messages.length - 1; i >= 0; i--) {
    const m = messages[i]!;
    if (m.role === "user" && !textOf(m.content).startsWith(INTERNAL)) return textOf(m.content);
  }
  return "";
}

/** The newest message a turn added to a request (the user's prompt or a tool result), skipping OpenClaw's internal context. */
export function newestText(r: { readonly messages: readonly ChatMessage[] }): string {
  for (let i = r.messages.length - 1; i >= 0; i--) {
    const m = r.messages[i]!;
    if (!(m.role === "user" && textOf(m.content).startsWith(INTERNAL))) return textOf(m.content);
  }
  return "";
}

/** Model steps since that user message (assistant messages after it). */
export function stepInTurn(messages: readonly ChatMessage[]): number {
  let steps = 0;
  for (let i = messages.length - 1; i >= 0; i--) {
    const m = messages[i]!;
    if (m.role === "user" && !textOf(m.content).startsWith(INTERNAL)) break;
    if (m.role === "assistant") steps++;
  }
  return steps;
}

export class ScriptedModel {
  readonly requests: ModelRequest[] = [];
  private readonly scripts = new Map<string, Script>();
  private server: Server | undefined;
  private callSeq = 0;
  /** Hard cap: a script bug must not loop the gateway forever. */
  maxSteps = 12;
  /** Provider errors still to give: the first request matching each gets its status instead of an answer. */
  private readonly failures: { match: (req: ModelRequest) => boolean; status: number }[] = [];
  private readonly waiters: { match: (req: ModelRequest) => boolean; resolve: (req: ModelRequest) => void }[] = [];

  /** Resolves with the first request (already made or still to come) that matches. */
  waitFor(match: (req: ModelRequest) => boolean): Promise<ModelRequest> {
    const made = this.requests.find(match);
    if (made) return Promise.resolve(made);
    return new Promise((resolve) => this.waiters.push({ match, resolve }));
  }

  private record(req: ModelRequest): void {
    this.requests.push(req);
    for (const w of this.waiters.filter((x) => x.match(req))) {
      this.waiters.splice(this.waiters.indexOf(w), 1);
      w.resolve(req);
    }
  }

  /** Answer the next request that matches with HTTP `status` (a provider error), once. */
  failOnce(match: (req: ModelRequest) => boolean, status = 500): void {
    this.failures.push({ match, status });
  }

  define(name: string, script: Script): void {
    this.scripts.set(name, script);
  }

  async start(): Promise<number> {
    this.server = createServer((req, res) => void this.handle(req, res).catch((err) => {
      res.statusCode = 500;
      res.end(String(err));
    }));
    await new Promise<void>((resolve) => this.server!.listen(0, "127.0.0.1", resolve));
    return (this.server.address() as AddressInfo).port;
  }

  async stop(): Promise<void> {
    await new Promise<void>((resolve) => this.server?.close(() => resolve()) ?? resolve());
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (req.method === "GET" && req.url?.endsWith("/models")) {
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify({ object: "list", data: ["scripted", "backup"].map((id) => ({ id, object: "model", owned_by: "test" })) }));
      return;
    }
    let raw = "";
    for await (const chunk of req) raw += String(chunk);
    const body = JSON.parse(raw) as { model?: string; messages: ChatMessage[]; tools?: { function: { name: string } }[] };
    const request: ModelRequest = { at: Date.now(), messages: body.messages, tools: (body.tools ?? []).map((t) => t.function.name), model: body.model ?? "" };
    const failure = this.failures.findIndex((f) => f.match(request));
    if (failure >= 0) {
      const { status } = this.failures.splice(failure, 1)[0]!;
      this.record({ ...request, failedWith: status });
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: { message: `scripted provider error ${status}`, type: "server_error", code: null } }));
      return;
    }
    this.record(request);
    const user = lastUserText(body.messages);
    const name = /SCRIPT=([\w-]+)/.exec(user)?.[1];
    const step = stepInTurn(body.messages);
    const script = name ? this.scripts.get(name) : undefined;
    const out: ScriptStep = !script ? { text: "ok" } : step >= this.maxSteps ? { text: "step limit reached" } : await script(request, step);
    this.stream(res, out);
  }

  private stream(res: ServerResponse, out: ScriptStep): void {
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
    const id = `chatcmpl-${++this.callSeq}`;
    const chunk = (delta: unknown, finish: string | null) =>
      res.write(`data: ${JSON.stringify({ id, object: "chat.completion.chunk", created: Math.floor(Date.now() / 1000), model: "scripted", choices: [{ index: 0, delta, finish_reason: finish }] })}\n\n`);
    if ("text" in out) {
      chunk({ role: "assistant", content: out.text }, null);
      chunk({}, "stop");
    } else {
      chunk(
        {
          role: "assistant",
          tool_calls: out.calls.map((c, index) => ({ index, id: `call_${this.callSeq}_${index}`, type: "function", function: { name: c.name, arguments: JSON.stringify(c.args) } })),
        },
        null,
      );
      chunk({}, "tool_calls");
    }
    res.write(`data: ${JSON.stringify({ id, object: "chat.completion.chunk", created: Math.floor(Date.now() / 1000), model: "scripted", choices: [], usage: { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 } })}\n\n`);
    res.write("data: [DONE]\n\n");
    res.end();
  }
}
