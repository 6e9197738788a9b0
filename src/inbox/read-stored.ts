/**
 * Read every message currently stored on a subject of a stream, oldest first, and stop: an ordered
 * consumer up to the last sequence present when reading began.
 */
import type { JsMsg } from "@nats-io/jetstream";
import type { MeshContext } from "../mesh-context.js";

export async function* readStored(ctx: MeshContext, stream: string, subject: string): AsyncGenerator<JsMsg> {
  const last = await ctx.jsm.streams.getMessage(stream, { last_by_subj: subject });
  if (last === null) return;
  const reader = await ctx.js.consumers.get(stream, { filter_subjects: subject });
  const messages = await reader.consume();
  try {
    for await (const m of messages) {
      yield m;
      if (m.seq >= last.seq) break;
    }
  } finally {
    messages.stop();
  }
}
