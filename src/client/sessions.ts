/** `mesh.sessions`: open a session's run or inbox, and the session registry. */
import type { SessionAddress } from "../address/index.js";
import { Inbox, SessionWatcher, followArrivals, inboxInstances, readPending, redirectPending, sessionsWithStored, summarizePending, tailInboxes, type Tail, type TailEvent, type InboxOptions, type PendingMessage, type PendingSummary, type RedirectOptions, type RedirectResult, type Arrival, type Arrivals } from "../inbox/index.js";
import { MeshError } from "../errors.js";
import { sessionKeyOf } from "../address/index.js";
import type { SessionFilter } from "../registry/index.js";
import { MeshSession } from "../session/index.js";
import type { SessionRecord, TurnOutcome } from "../wire/index.js";
import type { MeshCore, SessionRef } from "./core.js";

export class SessionsClient {
  /** @internal */
  constructor(private readonly core: MeshCore) {}

  /**
   * Start a session's run: takes its lease, opens its inbox and a live watcher. Hold it for the
   * run; `close()` at run end (what was not surfaced stays for the next run).
   */
  async open(session: SessionRef, opts: InboxOptions = {}): Promise<MeshSession> {
    const inbox = await this.openInbox(session, opts);
    try {
      const watcher = await SessionWatcher.start(this.core.ctx, inbox.session);
      const services = await this.core.services();
      await services.sessions.runStarted(inbox.session, inbox.holder);
      return new MeshSession(this.core.ctx, inbox, watcher, services);
    } catch (err) {
      await inbox.close();
      throw err;
    }
  }

  /** Open a session's inbox for reading only (waits for the session's lease if another reader holds it). */
  async openInbox(session: SessionRef, opts: InboxOptions = {}): Promise<Inbox> {
    return Inbox.open(this.core.ctx, this.core.own(session, "read"), opts);
  }

  /** Sessions across all instances, newest activity first. */
  async list(filter: SessionFilter = {}): Promise<SessionRecord[]> {
    return (await this.core.services()).sessions.list(filter);
  }

  /** One session's registry record. */
  async get(session: SessionRef): Promise<SessionRecord | undefined> {
    return (await this.core.services()).sessions.get(this.core.address(session));
  }

  /** Record a turn's outcome for a session of this instance (OpenClaw: done=ok, failed=error, timeout, killed=interrupted). */
  async recordTurn(session: SessionRef, outcome: TurnOutcome, error?: string): Promise<void> {
    await (await this.core.services()).sessions.turnEnded(this.core.own(session, "record turns of"), outcome, error);
  }

  /** Close a session of this instance for good (fires "closed" watches). */
  async close(session: SessionRef): Promise<void> {
    await (await this.core.services()).sessions.close(this.core.own(session, "close"));
  }

  /**
   * A session's pending messages (stored, not yet surfaced), oldest first, read without taking its
   * lease or touching its consumer: what its next run would be shown. Any instance's session, as far
   * as this connection's permissions allow.
   */
  async peek(session: SessionRef, opts: { readonly max?: number } = {}): Promise<PendingMessage[]> {
    return readPending(this.core.ctx, this.core.address(session), opts);
  }

  /** Sessions of an instance (default this one) with messages stored in its inbox stream, registered or not. */
  async withStored(instance: string = this.core.instance): Promise<SessionAddress[]> {
    return sessionsWithStored(this.core.ctx, instance);
  }

  /**
   * Follow envelopes published to an instance's inboxes (default this instance's), or to one
   * session's, as they arrive: a core subscription that acknowledges and records nothing.
   */
  tail(scope: { readonly instance?: string; readonly session?: SessionRef }, onEvent: (e: TailEvent) => void): Tail {
    const session = scope.session === undefined ? undefined : this.core.address(scope.session);
    return tailInboxes(this.core.ctx, { instance: session?.instance ?? scope.instance ?? this.core.instance, ...(session && { session }) }, onEvent);
  }

  /**
   * Follow what is stored for the sessions of this instance from now on: one long-lived ordered
   * consumer on its inbox stream, headers only (session, kind and sender come from the subject).
   * For hosts that start turns for idle sessions; after a lost connection, what was stored
   * meanwhile is delivered once the feed is back.
   */
  async arrivals(listener: (a: Arrival) => void): Promise<Arrivals> {
    return followArrivals(this.core.ctx, this.core.instance, listener);
  }

  /** Instances with an inbox on this mesh (as far as this connection may list streams). */
  async instances(): Promise<string[]> {
    return inboxInstances(this.core.ctx);
  }

  /** How many messages a session has pending, and the oldest one's storage time. */
  async pending(session: SessionRef): Promise<PendingSummary> {
    return summarizePending(this.core.ctx, this.core.address(session));
  }

  /**
   * Move the pending messages of a session of this instance to another session, so each surfaces
   * once, at `to`, and never at `from`; safe to run again after a crash (see subjects.md). Holds
   * `from`'s lease for the duration (waits while a run holds it).
   */
  async redirect(from: SessionRef, to: SessionRef, opts: RedirectOptions & InboxOptions = {}): Promise<RedirectResult> {
    const source = this.core.own(from, "redirect from");
    const target = this.core.address(to);
    if (source.instance === target.instance && sessionKeyOf(source) === sessionKeyOf(target)) throw new MeshError("usage", "redirect needs two different sessions");
    const inbox = await Inbox.open(this.core.ctx, source, opts);
    try {
      return await redirectPending(this.core.ctx, inbox, target, opts);
    } finally {
      await inbox.close();
    }
  }

  /** Resolve a session reference to an address; bare keys belong to this instance. */
  address(ref: SessionRef): SessionAddress {
    return this.core.address(ref);
  }
}
