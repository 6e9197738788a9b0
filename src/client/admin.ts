/** `mesh.admin`: provisioning and the background work a long-lived instance runs. */
import { assertInstanceId } from "../address/index.js";
import { Janitor, ensureDirectoryBucket, ensureSessionBucket, ensureWatchBucket } from "../registry/index.js";
import { ensureTaskBucket } from "../tasks/index.js";
import { ensureBucket, provisionInstance } from "../topology/index.js";
import type { MeshCore } from "./core.js";

export class AdminClient {
  private janitor: Janitor | undefined;

  /** @internal */
  constructor(private readonly core: MeshCore) {}

  /** Create (idempotently) the streams and buckets of an instance, and the shared buckets. */
  async provision(instance: string = this.core.instance): Promise<void> {
    assertInstanceId(instance);
    const ctx = this.core.ctx;
    await provisionInstance(ctx.nc, ctx.jsm, ctx.names, ctx.features, instance, ctx.config.retention, ctx.messageLimit);
    await ensureTaskBucket(ctx);
    await ensureSessionBucket(ctx);
    await ensureDirectoryBucket(ctx);
    await ensureWatchBucket(ctx);
    const r = ctx.config.retention;
    await ensureBucket(ctx.nc, ctx.jsm, ctx.names.taskKeyBucket(), { ttlMs: r.taskMaxAgeMs, replicas: r.replicas, description: "clawmesh task keys (idempotent spawn)" });
  }

  /**
   * Start the janitor (idles this instance's sessions whose run died) every `intervalMs` (default:
   * the configured `registry.janitorIntervalMs`). For processes that host an instance for long:
   * a gateway, `clawmesh start`. Stopped by `mesh.close()`.
   */
  async startJanitor(intervalMs: number = this.core.ctx.config.registry.janitorIntervalMs): Promise<void> {
    this.janitor ??= new Janitor(this.core.ctx, (await this.core.services()).sessions);
    this.janitor.start(intervalMs);
  }

  /** One janitor pass now; returns the session keys it moved to idle. */
  async sweep(): Promise<string[]> {
    this.janitor ??= new Janitor(this.core.ctx, (await this.core.services()).sessions);
    return this.janitor.sweep();
  }

  /** @internal */
  async stop(): Promise<void> {
    await this.janitor?.stop();
  }
}
