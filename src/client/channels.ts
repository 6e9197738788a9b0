/** `mesh.channels`: which sessions serve which channel addresses (discord:#product-chat, telegram:<chatId>...). */
import type { SessionAddress } from "../address/index.js";
import type { DirectoryEntry } from "../wire/index.js";
import type { MeshCore, SessionRef } from "./core.js";

export class ChannelsClient {
  /** @internal */
  constructor(private readonly core: MeshCore) {}

  /** Register that a session of this instance serves a channel address. */
  async bind(channel: string, session: SessionRef): Promise<void> {
    const address = this.core.own(session, "bind");
    const s = await this.core.services();
    const entry = await s.directory.bind(channel, address);
    await s.sessions.ensure(address);
    await s.sessions.bindChannel(address, entry.channel);
  }

  /** Stop a session of this instance serving a channel address. */
  async unbind(channel: string, session: SessionRef): Promise<void> {
    await (await this.core.services()).directory.unbind(channel, this.core.own(session, "unbind"));
  }

  /** The one session serving a channel address (errors name the candidates when none or several do). */
  async resolve(channel: string, filter: { agent?: string; instance?: string } = {}): Promise<SessionAddress> {
    return (await this.core.services()).directory.resolve(channel, filter);
  }

  /** Every binding. */
  async list(): Promise<DirectoryEntry[]> {
    return (await this.core.services()).directory.list();
  }
}
