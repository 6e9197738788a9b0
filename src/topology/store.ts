/**
 * The mesh's one KV store abstraction: a bucket of one zod-described record type. Every registry
 * (tasks, sessions, directory, watches, task keys, leases) reads and writes through it, so the
 * rules live here once:
 *
 * - a read is `absent`, a `value`, or `unreadable` (a record this code cannot parse, e.g. a later
 *   schema version); unreadable is never mistaken for absent, so nothing overwrites it blindly;
 * - every change is a compare-and-set at the revision read; conflicts are recognised by the
 *   server's API code, not by message text;
 * - read-modify-write retries are bounded: a key that keeps changing under us is an error, not a
 *   spin;
 * - nothing here creates a server consumer: lookups are by exact key, by the last message on a
 *   wildcard subject (a direct get), or by the stream's subject list (stream info), never by
 *   `kv.keys()` or an ad-hoc ordered consumer;
 * - identity comes from the key, which the broker checked when the record was written (each
 *   instance may write only keys that name it): a record whose body disagrees with its key (a
 *   neighbour's forgery under a key it may write) is `unreadable`, logged, and acted on by no one.
 */
import type { JetStreamManager, StoredMsg } from "@nats-io/jetstream";
import type { Logger } from "pino";
import { Kvm, type KV, type KvEntry } from "@nats-io/kv";
import type { Msg, NatsConnection } from "@nats-io/transport-node";
import type { z } from "zod";
import { MeshError } from "../errors.js";
import { isRevisionConflict } from "../transport/js-errors.js";
import { DirectReader, type DirectMsg, type DirectRequest } from "../transport/direct-reader.js";

/** One pipelined direct-get reader per connection (a single inbox subscription, made on first use). */
const readers = new WeakMap<NatsConnection, DirectReader>();
function readerFor(nc: NatsConnection): DirectReader {
  let r = readers.get(nc);
  if (r === undefined) {
    // Replies must come back under the connection's own inbox prefix (the only one its user may read).
    const inboxPrefix = (nc as { options?: { inboxPrefix?: string } }).options?.inboxPrefix;
    r = new DirectReader(nc, inboxPrefix === undefined ? {} : { inboxPrefix });
    readers.set(nc, r);
  }
  return r;
}

export interface Stored<T> {
  readonly key: string;
  readonly value: T;
  readonly revision: number;
}

export type StoreRead<T> =
  | { readonly status: "absent"; readonly key: string }
  | ({ readonly status: "value" } & Stored<T>)
  | { readonly status: "unreadable"; readonly key: string; readonly revision: number; readonly reason: string };

/** A stored record the mesh cannot read; left as it is (an operator can inspect it). */
export class UnreadableRecordError extends MeshError {
  readonly bucket: string;
  readonly key: string;
  constructor(bucket: string, key: string, reason: string) {
    super("record_unreadable", `record ${key} in ${bucket} cannot be read (${reason}); it was left unchanged`);
    this.bucket = bucket;
    this.key = key;
  }
}

/** A read-modify-write that kept losing its compare-and-set to other writers. */
export class StoreContentionError extends MeshError {
  constructor(bucket: string, key: string, attempts: number) {
    super("store_contention", `record ${key} in ${bucket} changed under ${attempts} consecutive attempts to update it; try again`);
  }
}

/** Read-modify-write attempts before giving up (each loss means another writer made progress). */
const MAX_UPDATE_ATTEMPTS = 32;

export interface KvStoreOptions<T> {
  /**
   * Whether a record's body agrees with the key it is stored under (the key names whose statement
   * the record is, and the broker checked that). A record that disagrees is read as unreadable.
   */
  readonly agrees?: (key: string, value: T) => boolean;
  /**
   * A check that accepts only values the schema accepts and outputs unchanged (property-tested
   * against it), so a common record is read without the schema's walk; anything else goes to the
   * schema, which decides and words the error.
   */
  readonly plain?: (json: unknown) => json is T;
}

const decoder = new TextDecoder();

export class KvStore<S extends z.ZodType> {
  private readonly stream: string;
  private readonly subjectPrefix: string;

  private constructor(
    /** The underlying bucket, for watches. */
    readonly kv: KV,
    private readonly jsm: JetStreamManager,
    private readonly reader: DirectReader,
    readonly name: string,
    private readonly schema: S,
    private readonly opts: KvStoreOptions<z.output<S>>,
    private readonly logger: Logger | undefined,
  ) {
    this.stream = `KV_${name}`;
    this.subjectPrefix = `$KV.${name}.`;
  }

  static async open<S extends z.ZodType>(
    conn: { readonly nc: NatsConnection; readonly jsm: JetStreamManager; readonly logger?: Logger },
    name: string,
    schema: S,
    opts: KvStoreOptions<z.output<S>> = {},
  ): Promise<KvStore<S>> {
    // Every mesh bucket allows direct gets, and a direct get of a key names the key in its API
    // subject: the broker can then check which keys a connection reads (see authorization.ts).
    return new KvStore(await new Kvm(conn.nc).open(name, { bindOnly: true, allow_direct: true }), conn.jsm, readerFor(conn.nc), name, schema, opts, conn.logger);
  }

  private parse(key: string, revision: number, data: () => unknown): StoreRead<z.output<S>> {
    let json: unknown;
    try {
      json = data();
    } catch {
      return { status: "unreadable", key, revision, reason: "not JSON" };
    }
    const r = this.opts.plain?.(json) ? { success: true as const, data: json as z.output<S> } : this.schema.safeParse(json);
    if (!r.success) return { status: "unreadable", key, revision, reason: r.error.issues[0]?.message ?? "schema mismatch" };
    if (this.opts.agrees && !this.opts.agrees(key, r.data)) {
      this.logger?.warn({ bucket: this.name, key, revision }, "ignoring a record whose body disagrees with its key");
      return { status: "unreadable", key, revision, reason: "its body disagrees with its key" };
    }
    return { status: "value", key, value: r.data, revision };
  }

  private fromStored(m: StoredMsg | DirectMsg): StoreRead<z.output<S>> {
    const key = m.subject.slice(this.subjectPrefix.length);
    const op = m.header?.get("KV-Operation");
    if (op === "DEL" || op === "PURGE") return { status: "absent", key };
    return this.parse(key, m.seq, () => JSON.parse(decoder.decode(m.data)));
  }

  /** Interpret a write as a feed delivered it (its stream sequence is the revision). */
  decodeDelivered(m: Msg, seq: number): StoreRead<z.output<S>> {
    return this.fromStored({ subject: m.subject, seq, data: m.data, header: m.headers });
  }

  /** Interpret a stored entry (from a get or a watch). */
  decode(entry: KvEntry): StoreRead<z.output<S>> {
    if (entry.operation !== "PUT") return { status: "absent", key: entry.key };
    return this.parse(entry.key, entry.revision, () => entry.json());
  }

  async read(key: string): Promise<StoreRead<z.output<S>>> {
    const entry = await this.kv.get(key);
    return entry === null ? { status: "absent", key } : this.decode(entry);
  }

  /** The value at `key`, undefined when absent; throws UnreadableRecordError for a record it cannot read. */
  async get(key: string): Promise<Stored<z.output<S>> | undefined> {
    const r = await this.read(key);
    if (r.status === "unreadable") throw new UnreadableRecordError(this.name, key, r.reason);
    return r.status === "value" ? r : undefined;
  }

  /** Create; undefined when the key already holds a value. */
  async create(key: string, value: z.output<S>): Promise<Stored<z.output<S>> | undefined> {
    try {
      return { key, value, revision: await this.kv.create(key, JSON.stringify(value)) };
    } catch (err) {
      if (isRevisionConflict(err)) return undefined;
      throw err;
    }
  }

  /** Compare-and-set at `current.revision`; undefined when another writer changed the key first. */
  async replace(current: { readonly key: string; readonly revision: number }, value: z.output<S>): Promise<Stored<z.output<S>> | undefined> {
    try {
      return { key: current.key, value, revision: await this.kv.update(current.key, JSON.stringify(value), current.revision) };
    } catch (err) {
      if (isRevisionConflict(err)) return undefined;
      throw err;
    }
  }

  /**
   * Read-modify-write until it sticks (bounded). `change` gets the current value (undefined when
   * absent) and returns the next one, or undefined to leave the key as it is. An unreadable record
   * is never overwritten: UnreadableRecordError.
   */
  async update(key: string, change: (current: z.output<S> | undefined) => z.output<S> | undefined): Promise<Stored<z.output<S>> | undefined> {
    for (let attempt = 1; attempt <= MAX_UPDATE_ATTEMPTS; attempt++) {
      const current = await this.get(key);
      const next = change(current?.value);
      if (next === undefined) return current;
      const written = current ? await this.replace(current, next) : await this.create(key, next);
      if (written) return written;
    }
    throw new StoreContentionError(this.name, key, MAX_UPDATE_ATTEMPTS);
  }

  /** Delete; with `revision`, only if the key is still at it (false when it moved on). */
  async delete(key: string, revision?: number): Promise<boolean> {
    try {
      await this.kv.delete(key, revision === undefined ? undefined : { previousSeq: revision });
      return true;
    } catch (err) {
      if (revision !== undefined && isRevisionConflict(err)) return false;
      throw err;
    }
  }

  /**
   * The most recently written key matching a wildcard `filter` (e.g. `<requester>.*.<taskId>`), read with
   * one direct get of the last message on the filter subject: an exact lookup when the filter can
   * match one key only.
   */
  async findLatest(filter: string): Promise<StoreRead<z.output<S>>> {
    const m = await this.jsm.direct.getMessage(this.stream, { last_by_subj: `${this.subjectPrefix}${filter}` });
    return m === null ? { status: "absent", key: filter } : this.fromStored(m);
  }

  /**
   * Keys with a stored entry matching `filter`, from the stream's subject list (one stream-info
   * request, paged by the client for large lists). A key whose last entry is a delete marker is
   * listed too: `values()` skips those.
   */
  async keys(filter = ">"): Promise<string[]> {
    const info = await this.jsm.streams.info(this.stream, { subjects_filter: `${this.subjectPrefix}${filter}` });
    return Object.keys(info.state.subjects ?? {}).map((subject) => subject.slice(this.subjectPrefix.length));
  }

  /** Every readable value whose key matches `filter` (one direct get per key, pipelined). Unreadable and deleted records are skipped. */
  async values(filter = ">"): Promise<Stored<z.output<S>>[]> {
    const reads = await this.readMany(await this.keys(filter));
    return reads.filter((r): r is { status: "value" } & Stored<z.output<S>> => r.status === "value");
  }

  /** Read many keys at once: direct gets of each key's last message, a bounded window in flight. */
  async readMany(keys: readonly string[]): Promise<StoreRead<z.output<S>>[]> {
    const got = await this.reader.getMany(this.stream, keys.map((key) => ({ lastBySubject: `${this.subjectPrefix}${key}` })));
    return got.map((m, i) => (m === null ? { status: "absent", key: keys[i]! } : this.fromStored(m)));
  }

  /**
   * A view of the whole bucket kept in this process and brought up to date on `refresh()` by
   * reading only what was written since the last refresh. For buckets with history 1 (every
   * registry): one message per key, so the stream's message count says whether the view still
   * holds every key.
   */
  view(): KvView<S> {
    return new KvView(this, this.jsm, this.reader, this.stream, this.subjectPrefix);
  }

  /** @internal Interpret a message the view read. */
  interpret(m: DirectMsg): StoreRead<z.output<S>> {
    return this.fromStored(m);
  }
}

interface ViewEntry<T> {
  readonly revision: number;
  /** Undefined for a delete or purge marker (it still counts as the key's one message). */
  readonly read: StoreRead<T> | undefined;
}

/**
 * The bucket as this process last saw it. A refresh reads the stream's state (one stream-info
 * request), then either
 *
 * - the sequences written since the last refresh (pipelined direct gets by sequence; a sequence
 *   that answers "not found" was overwritten later, and the later write is in the range too, or it
 *   was removed), or
 * - when that range is longer than reading every key would be (first use, or much written since),
 *   everything: by sequence when the stream is dense, otherwise the key list (stream info with a
 *   subject filter) and a direct get per key.
 *
 * A key rewritten while a refresh reads never drops out: a sequence that answers "not found" was
 * overwritten after the state was read, and the keys it could belong to are read again by key
 * (the ones the view held; else every key the view lacks, from the stream's subject list).
 * Entries below the stream's first sequence are read again by key (gone: dropped). A removal that
 * leaves no message (an operator's purge or message delete) shows as a message count the view does
 * not match, checked whenever nothing was written since the last refresh; the view then reloads.
 * No server consumer is involved, so it works with an instance's permissions on shared buckets
 * (stream info and direct get only).
 */
export class KvView<S extends z.ZodType> {
  private readonly entries = new Map<string, ViewEntry<z.output<S>>>();
  /** Stream sequence the view is complete through. */
  private through = 0;
  private loaded = false;
  private running: Promise<void> | undefined;
  private queued: Promise<void> | undefined;

  constructor(
    private readonly store: KvStore<S>,
    private readonly jsm: JetStreamManager,
    private readonly reader: DirectReader,
    private readonly stream: string,
    private readonly subjectPrefix: string,
  ) {}

  /**
   * Bring the view up to date with every write acknowledged before this call. Calls made while a
   * refresh runs share one refresh that starts after it.
   */
  refresh(): Promise<void> {
    if (this.running === undefined) {
      this.running = this.refreshNow().finally(() => (this.running = undefined));
      return this.running;
    }
    this.queued ??= this.running
      .catch(() => undefined)
      .then(() => {
        this.queued = undefined;
        return this.refresh();
      });
    return this.queued;
  }

  /** Readable values of the view, optionally only keys starting with `keyPrefix`. */
  values(keyPrefix = ""): Stored<z.output<S>>[] {
    const out: Stored<z.output<S>>[] = [];
    for (const [key, e] of this.entries) if (e.read?.status === "value" && key.startsWith(keyPrefix)) out.push(e.read);
    return out;
  }

  get size(): number {
    return this.entries.size;
  }

  private async refreshNow(): Promise<void> {
    const { first_seq: first, last_seq: last, messages } = (await this.jsm.streams.info(this.stream)).state;
    if (messages === 0) {
      this.entries.clear();
    } else {
      // Entries older than the stream's first message were overwritten or aged out.
      const older = [...this.entries].filter(([, e]) => e.revision < first).map(([key]) => key);
      // Nothing written since, yet the count differs: something was removed without a message (a purge).
      const reload = !this.loaded || (last === this.through && this.entries.size - older.length !== messages);
      const from = reload ? first : Math.max(this.through + 1, first);
      if (reload && last - from + 1 > 2 * messages) {
        this.entries.clear();
        await this.loadByKeys();
      } else {
        await this.catchUp(from, last, reload ? [...this.entries.keys()] : older);
      }
    }
    this.through = last;
    this.loaded = true;
  }

  /**
   * Read the sequences from..last, then make sure no key drops out because it was rewritten while
   * they were read: a sequence that answers "not found" was overwritten (or removed) after the
   * stream's state was read. `confirm` are keys the view held that the walk must account for
   * (all of them on a reload); any the walk did not see again are read by key (gone: dropped). A
   * "not found" that no held key explains was a key this view never saw, overwritten since: the
   * keys the view lacks are then read by key from the stream's subject list.
   */
  private async catchUp(from: number, last: number, confirm: readonly string[]): Promise<void> {
    const heldAt = new Set(confirm.map((key) => this.entries.get(key)?.revision));
    const { missed, seen } = await this.walk(from, last);
    await this.readKeys(confirm.filter((key) => !seen.has(key)), true);
    if (missed.some((seq) => !heldAt.has(seq))) {
      const info = await this.jsm.streams.info(this.stream, { subjects_filter: `${this.subjectPrefix}>` });
      await this.readKeys(Object.keys(info.state.subjects ?? {}).map((subject) => subject.slice(this.subjectPrefix.length)).filter((key) => !this.entries.has(key)), false);
    }
  }

  /** Read keys by key (their last message); with `drop`, a key with no message leaves the view. */
  private async readKeys(keys: readonly string[], drop: boolean): Promise<void> {
    if (keys.length === 0) return;
    const latest = await this.reader.getMany(this.stream, keys.map((key) => ({ lastBySubject: `${this.subjectPrefix}${key}` })));
    keys.forEach((key, i) => {
      const m = latest[i];
      if (m !== null && m !== undefined) this.apply(m);
      else if (drop) this.entries.delete(key);
    });
  }

  private async walk(from: number, last: number): Promise<{ missed: number[]; seen: Set<string> }> {
    const requests: DirectRequest[] = [];
    for (let seq = from; seq <= last; seq++) requests.push({ seq });
    const missed: number[] = [];
    const seen = new Set<string>();
    (await this.reader.getMany(this.stream, requests)).forEach((m, i) => {
      if (m === null) missed.push(from + i);
      else if (m.seq >= from && m.seq <= last) seen.add(this.apply(m));
    });
    return { missed, seen };
  }

  private async loadByKeys(): Promise<void> {
    this.entries.clear();
    const info = await this.jsm.streams.info(this.stream, { subjects_filter: `${this.subjectPrefix}>` });
    const subjects = Object.keys(info.state.subjects ?? {});
    for (const m of await this.reader.getMany(this.stream, subjects.map((s) => ({ lastBySubject: s })))) if (m !== null) this.apply(m);
  }

  /** Take a message into the view (unless it holds a newer one for the key); returns the key. */
  private apply(m: DirectMsg): string {
    const key = m.subject.slice(this.subjectPrefix.length);
    const current = this.entries.get(key);
    if (current !== undefined && current.revision >= m.seq) return key;
    const read = this.store.interpret(m);
    this.entries.set(key, { revision: m.seq, read: read.status === "absent" ? undefined : read });
    return key;
  }
}
