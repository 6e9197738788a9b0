/** Fresh, isolated meshes for tests: every test gets its own subject prefix (its own streams). */
import { randomBytes } from "node:crypto";
import { Mesh, type MeshConnectOptions } from "../../src/index.js";
import type { TestServer } from "./server.js";

export function uniquePrefix(): string {
  return `t${randomBytes(5).toString("hex")}`;
}

/** Timings scaled down so crash recovery happens within a test's patience. */
export const fastInbox = { ackWaitMs: 3000, leaseTtlMs: 3000, fetchExpiresMs: 1000 } as const;

export async function openMesh(server: TestServer, opts: Partial<MeshConnectOptions> & { instance: string; prefix: string }): Promise<Mesh> {
  return Mesh.connect({
    servers: server.url,
    ...opts,
    inbox: { ...fastInbox, ...opts.inbox },
    connection: { maxReconnectAttempts: -1, reconnectTimeWait: 100, ...opts.connection },
  });
}
