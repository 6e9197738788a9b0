/** `mesh.sessions`: open a session's run or inbox, and the session registry. */
import type { SessionAddress } from "../address/index.js";
import { Inbox, SessionWatcher, type InboxOptions } from "../inbox/index.js";
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

  /** Resolve a session reference to an address; bare keys belong to this instance. */
  address(ref: SessionRef): SessionAddress {
    return this.core.address(ref);
  }
}
