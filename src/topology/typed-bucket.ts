/**
 * A KV bucket of one zod-described record type, with compare-and-set updates: the one place the
 * registry's buckets get their read-parse, create-if-absent and CAS-retry logic.
 */
import { Kvm, type KV, type KvEntry } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import type { z } from "zod";

export interface Stored<T> {
  readonly key: string;
  readonly value: T;
  readonly revision: number;
}

const casLost = (err: unknown) => /wrong last sequence|key exists/i.test(String(err));

export class TypedBucket<S extends z.ZodType> {
  private constructor(
    readonly kv: KV,
    private readonly schema: S,
  ) {}

  static async open<S extends z.ZodType>(nc: NatsConnection, name: string, schema: S): Promise<TypedBucket<S>> {
    return new TypedBucket(await new Kvm(nc).open(name, { bindOnly: true }), schema);
  }

  parse(entry: KvEntry): z.output<S> | undefined {
    if (entry.operation !== "PUT") return undefined;
    try {
      const r = this.schema.safeParse(entry.json());
      return r.success ? r.data : undefined;
    } catch {
      return undefined;
    }
  }

  async get(key: string): Promise<Stored<z.output<S>> | undefined> {
    const entry = await this.kv.get(key);
    if (entry === null) return undefined;
    const value = this.parse(entry);
    return value === undefined ? undefined : { key, value, revision: entry.revision };
  }

  /** Create; undefined when the key already holds a value. */
  async create(key: string, value: z.output<S>): Promise<Stored<z.output<S>> | undefined> {
    try {
      return { key, value, revision: await this.kv.create(key, JSON.stringify(value)) };
    } catch (err) {
      if (casLost(err)) return undefined;
      throw err;
    }
  }

  /** Compare-and-set; undefined when another writer changed the key first. */
  async replace(current: Stored<z.output<S>>, value: z.output<S>): Promise<Stored<z.output<S>> | undefined> {
    try {
      return { key: current.key, value, revision: await this.kv.update(current.key, JSON.stringify(value), current.revision) };
    } catch (err) {
      if (casLost(err)) return undefined;
      throw err;
    }
  }

  /**
   * Read-modify-write until it sticks. `change` gets the current value (undefined when absent) and
   * returns the next one, or undefined to leave the key as it is.
   */
  async update(key: string, change: (current: z.output<S> | undefined) => z.output<S> | undefined): Promise<Stored<z.output<S>> | undefined> {
    for (;;) {
      const current = await this.get(key);
      const next = change(current?.value);
      if (next === undefined) return current;
      const written = current ? await this.replace(current, next) : await this.create(key, next);
      if (written) return written;
    }
  }

  async delete(key: string): Promise<void> {
    await this.kv.delete(key);
  }

  async keys(filter = ">"): Promise<string[]> {
    const out: string[] = [];
    for await (const k of await this.kv.keys(filter)) out.push(k);
    return out;
  }

  /** Every current value whose key matches `filter`. */
  async values(filter = ">"): Promise<Stored<z.output<S>>[]> {
    const out: Stored<z.output<S>>[] = [];
    for (const key of await this.keys(filter)) {
      const v = await this.get(key);
      if (v) out.push(v);
    }
    return out;
  }
}
