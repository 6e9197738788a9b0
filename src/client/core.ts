/**
 * What the mesh's sub-clients share: the connection context, the registries (opened once, on first
 * use) and how a session reference becomes an address. Internal: not part of the public API.
 */
import { parseSessionKey, sessionKeyOf, type SessionAddress } from "../address/index.js";
import { InvalidAddressError } from "../errors.js";
import type { MeshContext } from "../mesh-context.js";
import { Directory, SessionRegistry, Watches } from "../registry/index.js";
import { TaskKeys, taskKeyEntryAgrees, type MeshServices } from "../session/index.js";
import { CompletionNotifier, TaskRegistry, type FinishDeps } from "../tasks/index.js";
import { KvStore } from "../topology/index.js";
import { TaskKeyEntrySchema } from "../wire/index.js";

/** A session named by key (on this mesh's instance unless `instance` is given) or by address. */
export type SessionRef = string | SessionAddress | { readonly sessionKey: string; readonly instance?: string };

const KEY_CACHE_MAX = 4096;

export class MeshCore {
  private servicesHandle: Promise<MeshServices> | undefined;
  private readonly keyCache = new Map<string, SessionAddress>();

  /** Retries undeliverable completions and runs recovery in the background; stopped by `mesh.close()`. */
  readonly notifier: CompletionNotifier;

  constructor(readonly ctx: MeshContext) {
    this.notifier = new CompletionNotifier(ctx, async () => (await this.services()).tasks);
  }

  get instance(): string {
    return this.ctx.config.instance;
  }

  /** The shared registries (opened on first use). */
  services(): Promise<MeshServices> {
    this.servicesHandle ??= (async () => {
      // Watches find a task's instances through the task registry, which fires them.
      let tasks: TaskRegistry | undefined;
      const watches = await Watches.open(this.ctx, { locate: (taskId, requester) => tasks!.locate(taskId, requester) });
      tasks = await TaskRegistry.open(this.ctx, watches);
      return {
        watches,
        tasks,
        sessions: await SessionRegistry.open(this.ctx, watches),
        directory: await Directory.open(this.ctx),
        taskKeys: await KvStore.open(this.ctx, this.ctx.names.taskKeyBucket(), TaskKeyEntrySchema, { agrees: (key, e) => taskKeyEntryAgrees(this.ctx.names, key, e) }),
        notifier: this.notifier,
      };
    })();
    return this.servicesHandle;
  }

  /** Stop what the registries run in the background (mesh close). */
  async closeServices(): Promise<void> {
    const s = await this.servicesHandle?.catch(() => undefined);
    s?.tasks.close();
  }

  async finishDeps(): Promise<FinishDeps> {
    const s = await this.services();
    return { ctx: this.ctx, tasks: s.tasks, sessions: s.sessions, directory: s.directory, notifier: this.notifier };
  }

  async taskKeys(): Promise<TaskKeys> {
    return new TaskKeys(this.ctx, await this.services());
  }

  /** Resolve a session reference to an address; bare keys belong to this instance. */
  address(ref: SessionRef): SessionAddress {
    if (typeof ref === "string") return this.parseOwnKey(ref);
    if ("sessionKey" in ref) return parseSessionKey(ref.sessionKey, ref.instance ?? this.instance);
    // Re-derive from the key so hand-built addresses get the same validation and folding.
    return { ...parseSessionKey(sessionKeyOf(ref), ref.instance), ...(ref.run !== undefined && { run: ref.run }) };
  }

  /** Keys of this instance repeat on every send: parse each once (bounded cache). */
  private parseOwnKey(key: string): SessionAddress {
    let a = this.keyCache.get(key);
    if (a === undefined) {
      a = parseSessionKey(key, this.instance);
      if (this.keyCache.size >= KEY_CACHE_MAX) this.keyCache.clear();
      this.keyCache.set(key, a);
    }
    return a;
  }

  /** An address of this instance, or InvalidAddressError saying what this instance may not do. */
  own(ref: SessionRef, what: string): SessionAddress {
    const address = this.address(ref);
    if (address.instance !== this.instance) {
      throw new InvalidAddressError(sessionKeyOf(address), `instance '${this.instance}' can only ${what} its own sessions`);
    }
    return address;
  }
}

