/** Fresh, isolated meshes for tests: every test gets its own subject prefix (its own streams), removed afterwards. */
import { connect } from "@nats-io/transport-node";
import { Mesh, MeshConfigSchema, type MeshConnectOptions } from "../../src/index.js";
import { createMeshContext, type MeshContext } from "../../src/mesh-context.js";
import { MeshInspector, type TestServer } from "../../src/testing/index.js";

export { uniquePrefix } from "../../src/testing/index.js";

/** Timings scaled down so crash recovery happens within a test's patience. */
export const fastInbox = { ackWaitMs: 3000, leaseTtlMs: 3000, fetchExpiresMs: 3000 } as const;

/** Each test gets fresh streams, and file streams reserve their max_bytes: keep test caps small. */
export const smallRetention = { maxBytes: 16 * 1024 * 1024, parkedMaxBytes: 4 * 1024 * 1024, seenMaxBytes: 4 * 1024 * 1024 } as const;

/** Prefixes this test file created streams under, per server URL. */
const created = new Map<string, Set<string>>();
const inspectors = new Map<string, Promise<MeshInspector>>();

export async function openMesh(server: TestServer, opts: Partial<MeshConnectOptions> & { instance: string; prefix: string }): Promise<Mesh> {
  let prefixes = created.get(server.url);
  if (!prefixes) created.set(server.url, (prefixes = new Set()));
  prefixes.add(opts.prefix);
  return Mesh.connect({
    servers: server.url,
    ...opts,
    retention: { ...smallRetention, ...opts.retention },
    inbox: { ...fastInbox, ...opts.inbox },
    connection: { maxReconnectAttempts: -1, reconnectTimeWait: 100, ...opts.connection },
  });
}

/** A view of what the server stores under `prefix` (one per server and prefix, closed by `removeTestStreams`). */
export function inspect(server: TestServer, prefix: string): Promise<MeshInspector> {
  const key = `${server.url} ${prefix}`;
  let ins = inspectors.get(key);
  if (!ins) inspectors.set(key, (ins = MeshInspector.connect(server.url, prefix, { maxReconnectAttempts: -1, reconnectTimeWait: 100 })));
  return ins;
}

/**
 * Remove every stream and bucket this file's tests created on `server`, as a fresh queue per test
 * is removed after it. Call after the file's meshes are closed.
 */
export async function removeTestStreams(server: TestServer): Promise<void> {
  for (const prefix of created.get(server.url) ?? []) {
    const ins = await inspect(server, prefix);
    await ins.removePrefix();
  }
  created.delete(server.url);
  for (const [key, ins] of inspectors) {
    if (!key.startsWith(`${server.url} `)) continue;
    inspectors.delete(key);
    await (await ins).close();
  }
}

const contexts: MeshContext[] = [];

/** A mesh context over a connection of its own, for tests of internal parts (leases, consumers). */
export async function internalContext(server: TestServer, prefix: string, instance: string): Promise<MeshContext> {
  const nc = await connect({ servers: server.url, noAsyncTraces: true });
  const ctx = await createMeshContext(nc, MeshConfigSchema.parse({ instance, prefix, inbox: fastInbox, retention: smallRetention }));
  contexts.push(ctx);
  return ctx;
}

/** Close the connections `internalContext` opened. */
export async function closeInternalContexts(): Promise<void> {
  for (const ctx of contexts.splice(0)) {
    ctx.ingest.close();
    await ctx.nc.close();
  }
}

/**
 * Take and confirm until the server reports nothing more behind the last batch; the ids shown, in
 * order. Ends on the batch's `more` signal, never on the first empty batch.
 */
export async function takeAll(reader: { take(opts?: { max?: number }): Promise<{ messages: readonly { id: string }[]; more: boolean; confirm(): Promise<void> }> }, max = 1000): Promise<string[]> {
  const shown: string[] = [];
  for (let more = true; more; ) {
    const batch = await reader.take({ max });
    shown.push(...batch.messages.map((m) => m.id));
    await batch.confirm();
    more = batch.more;
  }
  return shown;
}
