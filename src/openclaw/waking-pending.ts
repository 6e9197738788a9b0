/** What a wake would show: the first pending message of a session that is of a waking kind. */
import type { SessionAddress } from "../address/index.js";
import { isSilentHandoff } from "../inbox/inbox.js";
import type { Mesh } from "../mesh.js";

/** How far a look reads into a session's pending messages for one of a waking kind. */
const LOOK_AHEAD = 100;

/**
 * Stream sequence of the first pending message of `session` that its next turn would show and
 * that is of a waking kind: readable, and not a reply or completion whose action is `skip`
 * (those are recorded silently). Read by peeking: no lease, no consumer.
 */
export async function firstWakingPending(mesh: Mesh, session: SessionAddress, kinds: ReadonlySet<string>): Promise<number | undefined> {
  const pending = await mesh.sessions.peek(session, { max: LOOK_AHEAD });
  return pending.find((p) => kinds.has(p.kind) && p.envelope !== undefined && !isSilentHandoff(p.envelope))?.seq;
}
