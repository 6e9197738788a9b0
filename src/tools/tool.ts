/**
 * The host-neutral tool shape: a name, a description for the model, JSON Schema parameters generated
 * from the zod schema that also validates them, and `execute`. Results always say, in plain words,
 * what happened and what the model should do next.
 */
import { z } from "zod";
import { MeshError, SendFailedError } from "../errors.js";
import { isBusUnreachable, isNoResponders, isNotPermitted } from "../transport/js-errors.js";
import type { MeshSession } from "../session/index.js";
import type { Origin } from "../wire/index.js";

/** Who is calling: supplied by the host from its own context, never by the model. */
export interface ToolContext {
  /** The calling session's open run. */
  readonly session: MeshSession;
  /** Where the calling turn's conversation lives, from the host (`originFromHostContext`). */
  readonly origin?: Origin;
  readonly signal?: AbortSignal;
}

export interface ToolResult {
  readonly ok: boolean;
  /** What the model reads. */
  readonly text: string;
  /** Structured form of the same outcome, for hosts and logs. */
  readonly details: Record<string, unknown>;
}

export interface MeshTool {
  readonly name: string;
  readonly description: string;
  readonly parameters: Record<string, unknown>;
  execute(params: unknown, ctx: ToolContext): Promise<ToolResult>;
}

export function defineTool<S extends z.ZodObject>(def: {
  name: string;
  description: string;
  schema: S;
  run: (params: z.output<S>, ctx: ToolContext) => Promise<ToolResult>;
}): MeshTool {
  const { $schema: _drop, ...parameters } = z.toJSONSchema(def.schema, { io: "input" }) as Record<string, unknown>;
  return {
    name: def.name,
    description: def.description,
    parameters,
    async execute(params, ctx) {
      const parsed = def.schema.safeParse(params ?? {});
      if (!parsed.success) {
        const issues = parsed.error.issues.map((i) => ({ field: i.path.map(String).join(".") || "(parameters)", message: i.message }));
        return {
          ok: false,
          text: `${def.name} was not run: invalid parameters. ${issues.map((i) => `\`${i.field}\`: ${i.message}`).join("; ")}. Fix the parameters and call it again.`,
          details: { error: "invalid_parameters", issues },
        };
      }
      try {
        return await def.run(parsed.data, ctx);
      } catch (err) {
        const failed = failureResult(def.name, err, ctx.session.connected);
        if (failed === undefined) throw err;
        return failed;
      }
    },
  };
}

/**
 * What a tool returns instead of throwing: connection trouble (transient: try again shortly),
 * refusals of this gateway's identity or permissions (configuration: retrying will not help), and
 * the mesh's own typed errors. Anything else is a bug and is thrown.
 */
export function failureResult(tool: string, err: unknown, connected: boolean): ToolResult | undefined {
  const message = err instanceof Error ? err.message : String(err);
  if (isNotPermitted(err)) {
    return {
      ok: false,
      text: `${tool} was refused by the message bus: ${message}. This is a configuration problem (this gateway's credentials or permissions), not a passing failure: trying again will not help. Tell the user or the operator.`,
      details: { error: "not_permitted", message },
    };
  }
  // "No responders" while connected: no stream answered, as while a clustered stream elects its
  // leader (a stream that was never provisioned is refused at connect, with the operator action).
  if (isBusUnreachable(err, { connected }) || isNoResponders(err)) {
    const unsent = err instanceof SendFailedError ? ` Message ${err.envelopeId} may not have been stored.` : "";
    return {
      ok: false,
      text: `${tool} could not complete: the message bus is unreachable right now (${message}).${unsent} Nothing already delivered was lost, and results that arrive meanwhile are kept for this session. Try again shortly.`,
      details: { error: "bus_unreachable", message, ...(err instanceof SendFailedError && { id: err.envelopeId }) },
    };
  }
  if (err instanceof MeshError) return { ok: false, text: `${tool} failed: ${err.message}`, details: { error: err.code, message: err.message } };
  return undefined;
}

/** A JSON body as the model should read it. */
export function bodyText(body: unknown): string {
  return typeof body === "string" ? body : JSON.stringify(body);
}
