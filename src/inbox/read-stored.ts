/**
 * Read every message currently stored on a subject (or wildcard) of a stream, oldest first, and
 * stop: one direct get per message (`next_by_subj`), up to the last sequence present when reading
 * began. No server consumer is created, so a listing leaves nothing behind.
 */
import type { StoredMsg } from "@nats-io/jetstream";
import type { MeshContext } from "../mesh-context.js";

export async function* readStored(ctx: MeshContext, stream: string, subject: string): AsyncGenerator<StoredMsg> {
  const last = await ctx.jsm.direct.getMessage(stream, { last_by_subj: subject });
  if (last === null) return;
  for (let seq = 1; seq <= last.seq; ) {
    const m = await ctx.jsm.direct.getMessage(stream, { seq, next_by_subj: subject });
    if (m === null || m.seq > last.seq) return;
    yield m;
    seq = m.seq + 1;
  }
}
