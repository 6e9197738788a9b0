/**
 * The host-neutral tool shape: a name, a description for the model, JSON Schema parameters generated
 * from the zod schema that also validates them, and `execute`. Results always say, in plain words,
 * what happened and what the model should do next.
 */
import { z } from "zod";
import { MeshError } from "../errors.js";
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
        if (!(err instanceof MeshError)) throw err;
        return { ok: false, text: `${def.name} failed: ${err.message}`, details: { error: err.code, message: err.message } };
      }
    },
  };
}

/** A JSON body as the model should read it. */
export function bodyText(body: unknown): string {
  return typeof body === "string" ? body : JSON.stringify(body);
}
