/**
 * A test's view of the broker, beside the mesh under test: its own connection, the mesh's names,
 * and raw JetStream handles, so a test checks what the server stored (or publishes what a raw
 * client could) without reaching into a Mesh's internals. Also removes a prefix's streams after a
 * test.
 */
import { connect, type ConnectionOptions, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from "@nats-io/jetstream";
import { parseSessionKey, type SessionAddress } from "../address/index.js";
import { Names } from "../topology/index.js";

export class MeshInspector {
  private constructor(
    readonly nc: NatsConnection,
    readonly js: JetStreamClient,
    readonly jsm: JetStreamManager,
    readonly names: Names,
  ) {}

  static async connect(servers: string | string[], prefix: string, connection: Omit<ConnectionOptions, "servers"> = {}): Promise<MeshInspector> {
    const nc = await connect({ ...connection, servers, noAsyncTraces: true });
    return new MeshInspector(nc, jetstream(nc), await jetstreamManager(nc), new Names(prefix));
  }

  address(sessionKey: string, instance: string): SessionAddress {
    return parseSessionKey(sessionKey, instance);
  }

  /** Messages stored in an instance's inbox stream (optionally only on one subject filter). */
  async storedInbox(instance: string, subjectsFilter?: string): Promise<number> {
    const info = await this.jsm.streams.info(this.names.inboxStream(instance), subjectsFilter === undefined ? undefined : { subjects_filter: subjectsFilter });
    return subjectsFilter === undefined ? info.state.messages : Object.values(info.state.subjects ?? {}).reduce((a, b) => a + b, 0);
  }

  /** The durable consumer of a session's inbox, if the server has one. */
  async sessionConsumer(session: SessionAddress) {
    return this.jsm.consumers.info(this.names.inboxStream(session.instance), this.names.sessionConsumer(session)).catch(() => undefined);
  }

  /** Server consumers on every stream under this inspector's prefix (durables and ordered ones alike). */
  async consumerCount(): Promise<number> {
    let count = 0;
    for (const name of await this.streamNames()) count += (await this.jsm.streams.info(name)).state.consumer_count;
    return count;
  }

  private async streamNames(): Promise<string[]> {
    const p = this.names.prefix;
    const out: string[] = [];
    for await (const name of this.jsm.streams.names()) if (name.startsWith(`${p}_`) || name.startsWith(`KV_${p}_`)) out.push(name);
    return out;
  }

  /** Delete every stream (inboxes, parked, seen, KV buckets) under this inspector's prefix. */
  async removePrefix(): Promise<number> {
    const names = await this.streamNames();
    for (const name of names) await this.jsm.streams.delete(name).catch(() => undefined);
    return names.length;
  }

  async close(): Promise<void> {
    await this.nc.close();
  }
}
