/**
 * The persistent record of what each session's model was shown: an append-only log of surfaced
 * envelope ids per session, on a stream subject of its own. It is the mesh's dedup truth: a
 * message whose envelope id is in the log is acknowledged without being shown again, however it
 * came back (redelivery after a crash, a publish retried after the server's duplicate window, a
 * consumer recreated after being reaped). Appending one record per confirmed batch (not one write
 * per message) keeps confirming cheap.
 */
import type { SessionAddress } from "../address/index.js";
import type { MeshContext } from "../mesh-context.js";
import { readStored } from "./read-stored.js";
import { SeenRecordSchema, type SeenRecord } from "../wire/index.js";

export interface SeenState {
  readonly ids: Set<string>;
  /** Highest inbox stream sequence fully handled; 0 when nothing was. */
  through: number;
}

export async function loadSeen(ctx: MeshContext, session: SessionAddress): Promise<SeenState> {
  const state: SeenState = { ids: new Set(), through: 0 };
  for await (const m of readStored(ctx, ctx.names.seenStream(session.instance), ctx.names.seenSubject(session))) {
    apply(state, m.data, ctx);
  }
  return state;
}

export async function appendSeen(ctx: MeshContext, session: SessionAddress, ids: readonly string[], through: number | undefined): Promise<void> {
  const record: SeenRecord = { v: 1, ids: [...ids], ...(through !== undefined && { through }), at: new Date().toISOString() };
  await ctx.js.publish(ctx.names.seenSubject(session), JSON.stringify(record), {
    expect: { streamName: ctx.names.seenStream(session.instance) },
  });
}

function apply(state: SeenState, data: Uint8Array, ctx: MeshContext): void {
  let parsed;
  try {
    parsed = SeenRecordSchema.safeParse(JSON.parse(new TextDecoder().decode(data)));
  } catch {
    parsed = undefined;
  }
  if (!parsed?.success) {
    ctx.logger.warn("skipping an unreadable surfaced-id record");
    return;
  }
  for (const id of parsed.data.ids) state.ids.add(id);
  if (parsed.data.through !== undefined && parsed.data.through > state.through) state.through = parsed.data.through;
}
