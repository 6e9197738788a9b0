/**
 * What lands in any session inbox of one instance, as it is stored: one ordered consumer on the
 * instance's inbox stream (`<prefix>.in.<instance>.>`), headers only, for the life of the caller.
 * A host that starts turns for idle sessions learns of arrivals here without a consumer per
 * message or per session, and within what an instance user may do (its own stream, replies to its
 * own inbox prefix). It only says that something arrived, for which session and of which kind:
 * what is pending is the inbox's (and `peek`'s) to say.
 */
import type { SessionAddress } from "../address/index.js";
import type { MeshContext } from "../mesh-context.js";
import { StreamFollower } from "./follower.js";

export interface Arrival {
  /** The receiving session (this instance's). */
  readonly session: SessionAddress;
  readonly kind: string;
  /** The sending instance, as the broker-checked subject names it. */
  readonly fromInstance: string;
  /** Inbox stream sequence. */
  readonly seq: number;
}

export interface Arrivals {
  stop(): void;
}

/**
 * Call `listener` for each message stored for a session of `instance` from now on (and, after a
 * lost connection, for what was stored meanwhile).
 */
export async function followArrivals(ctx: MeshContext, instance: string, listener: (a: Arrival) => void): Promise<Arrivals> {
  return StreamFollower.start(
    ctx,
    { stream: ctx.names.inboxStream(instance), filter: ctx.names.inboxWildcard(instance), headersOnly: true, label: { arrivals: instance } },
    (m) => {
      const p = ctx.names.parseInboxSubject(m.subject);
      if (!p || p.toInstance !== instance) return;
      listener({ session: { instance, agent: p.agent, channel: p.channel, session: p.session }, kind: p.kind, fromInstance: p.fromInstance, seq: m.seq });
    },
  );
}
