/**
 * The channel directory: which sessions serve a channel address, registered by the instance that
 * owns the binding. Addresses: `discord:#product-chat`, `discord:<guild>/<channel>`,
 * `telegram:<chatId>`, `telegram:<chatId>/topic/<id>`, and generally `<platform>:<where>`.
 * Entries live in `<prefix>_directory` under `<encoded address>.<instance>.<agent>.<session hash>`.
 */
import { parseSessionKey, sessionKeyOf, type SessionAddress } from "../address/index.js";
import { MeshError } from "../errors.js";
import type { MeshContext } from "../mesh-context.js";
import { KvStore, ensureBucket, type Names } from "../topology/index.js";
import { DirectoryEntrySchema, type DirectoryEntry } from "../wire/index.js";

export class InvalidChannelAddressError extends MeshError {
  constructor(input: string, reason: string) {
    super("invalid_channel_address", `invalid channel address ${JSON.stringify(input)}: ${reason} (e.g. discord:#product-chat, discord:<guild>/<channel>, telegram:<chatId>, telegram:<chatId>/topic/<id>)`);
  }
}

export class UnknownChannelError extends MeshError {
  readonly candidates: readonly string[];
  constructor(channel: string, candidates: readonly string[], agent?: string) {
    const who = agent ? ` for agent ${agent}` : "";
    const list = candidates.length ? ` Known channel addresses: ${candidates.join(", ")}.` : " No channel of that platform is registered.";
    super("unknown_channel", `no session serves ${channel}${who}.${list}`);
    this.candidates = candidates;
  }
}

export class AmbiguousChannelError extends MeshError {
  readonly candidates: readonly string[];
  constructor(channel: string, candidates: readonly string[]) {
    super("ambiguous_channel", `${channel} is served by ${candidates.length} sessions: ${candidates.join("; ")}. Say which with agentId (or instance).`);
    this.candidates = candidates;
  }
}

/** Normalise a channel address: platform lowercased, surrounding space trimmed. */
export function parseChannelAddress(input: string): string {
  const trimmed = input.trim();
  const colon = trimmed.indexOf(":");
  if (colon <= 0) throw new InvalidChannelAddressError(input, "expected <platform>:<where>");
  const platform = trimmed.slice(0, colon).toLowerCase();
  const where = trimmed.slice(colon + 1).trim();
  if (!/^[a-z][a-z0-9_-]{0,31}$/.test(platform)) throw new InvalidChannelAddressError(input, "the platform is 1-32 of a-z 0-9 _ -");
  if (where.length === 0 || where.length > 200) throw new InvalidChannelAddressError(input, "the part after the platform is empty or too long");
  if (platform === "telegram" && !/^-?\d+(\/topic\/\d+)?$/.test(where)) throw new InvalidChannelAddressError(input, "telegram addresses are <chatId> or <chatId>/topic/<id>");
  return `${platform}:${where}`;
}

/**
 * Whether an entry's body agrees with its key: the key names the channel and the session of the
 * binding, and its instance token is checked by the broker (each instance binds only its own
 * sessions), so an entry naming another instance's session is a forgery.
 */
function directoryEntryAgrees(names: Names, key: string, e: DirectoryEntry): boolean {
  try {
    const session = parseSessionKey(e.sessionKey, e.instance);
    return session.agent === e.agent && names.directoryKey(e.channel, session) === key;
  } catch {
    return false;
  }
}

export async function ensureDirectoryBucket(ctx: MeshContext): Promise<void> {
  await ensureBucket(ctx.nc, ctx.jsm, ctx.names.directoryBucket(), { ttlMs: ctx.config.retention.taskMaxAgeMs, replicas: ctx.config.retention.replicas, description: "clawmesh channel directory" });
}

export class Directory {
  private constructor(
    private readonly names: Names,
    private readonly bucket: KvStore<typeof DirectoryEntrySchema>,
  ) {}

  static async open(ctx: MeshContext): Promise<Directory> {
    return new Directory(ctx.names, await KvStore.open(ctx, ctx.names.directoryBucket(), DirectoryEntrySchema, { agrees: (key, e) => directoryEntryAgrees(ctx.names, key, e) }));
  }

  /** Register that `session` serves `channel` (idempotent). */
  async bind(channelInput: string, session: SessionAddress): Promise<DirectoryEntry> {
    const channel = parseChannelAddress(channelInput);
    const entry: DirectoryEntry = { v: 1, channel, sessionKey: sessionKeyOf(session), instance: session.instance, agent: session.agent, boundAt: new Date().toISOString() };
    await this.bucket.update(this.names.directoryKey(channel, session), (cur) => (cur?.sessionKey === entry.sessionKey ? undefined : entry));
    return entry;
  }

  async unbind(channelInput: string, session: SessionAddress): Promise<void> {
    await this.bucket.delete(this.names.directoryKey(parseChannelAddress(channelInput), session));
  }

  /** Sessions serving a channel address (optionally of one agent / instance). */
  async lookup(channelInput: string, filter: { agent?: string; instance?: string } = {}): Promise<DirectoryEntry[]> {
    const channel = parseChannelAddress(channelInput);
    const entries = (await this.bucket.values(this.names.directoryChannelFilter(channel))).map((s) => s.value);
    return entries.filter((e) => (!filter.agent || e.agent === filter.agent.toLowerCase()) && (!filter.instance || e.instance === filter.instance));
  }

  /** The one session serving a channel address, or an error naming the candidates. */
  async resolve(channelInput: string, filter: { agent?: string; instance?: string } = {}): Promise<SessionAddress> {
    const channel = parseChannelAddress(channelInput);
    const matches = await this.lookup(channel, filter);
    if (matches.length === 1) return parseSessionKey(matches[0]!.sessionKey, matches[0]!.instance);
    if (matches.length > 1) throw new AmbiguousChannelError(channel, matches.map((e) => `${e.sessionKey} @${e.instance} (agent ${e.agent})`));
    const servedBy = await this.lookup(channel);
    if (servedBy.length > 0) {
      throw new UnknownChannelError(channel, servedBy.map((e) => `${channel} -> agent ${e.agent} @${e.instance}`), filter.agent);
    }
    const platform = channel.slice(0, channel.indexOf(":") + 1);
    const known = [...new Set((await this.bucket.values()).map((e) => e.value.channel))].filter((c) => c.startsWith(platform)).sort().slice(0, 20);
    throw new UnknownChannelError(channel, known, filter.agent);
  }

  async list(): Promise<DirectoryEntry[]> {
    return (await this.bucket.values()).map((s) => s.value);
  }
}
