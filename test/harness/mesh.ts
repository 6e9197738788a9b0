/** Fresh, isolated meshes for tests: every test gets its own subject prefix (its own streams). */
import { randomBytes } from "node:crypto";
import { Mesh, type MeshConnectOptions } from "../../src/index.js";
import type { TestServer } from "./server.js";

export function uniquePrefix(): string {
  return `t${randomBytes(5).toString("hex")}`;
}

/** Timings scaled down so crash recovery happens within a test's patience. */
export const fastInbox = { ackWaitMs: 3000, leaseTtlMs: 3000, fetchExpiresMs: 3000 } as const;

/** Each test gets fresh streams, and file streams reserve their max_bytes: keep test caps small. */
export const smallRetention = { maxBytes: 16 * 1024 * 1024, parkedMaxBytes: 4 * 1024 * 1024, seenMaxBytes: 4 * 1024 * 1024 } as const;

export async function openMesh(server: TestServer, opts: Partial<MeshConnectOptions> & { instance: string; prefix: string }): Promise<Mesh> {
  return Mesh.connect({
    servers: server.url,
    ...opts,
    retention: { ...smallRetention, ...opts.retention },
    inbox: { ...fastInbox, ...opts.inbox },
    connection: { maxReconnectAttempts: -1, reconnectTimeWait: 100, ...opts.connection },
  });
}
