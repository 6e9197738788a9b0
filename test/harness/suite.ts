/**
 * One test file's server and clean-up, registered with vitest's hooks: a real nats-server for the
 * file, meshes and other resources closed after it, and the file's streams removed.
 */
import { afterAll, beforeAll } from "vitest";
import type { Mesh, MeshConnectOptions } from "../../src/index.js";
import { startTestServer, type TestServer } from "../../src/testing/index.js";
import { openMesh, removeTestStreams } from "./mesh.js";

export interface Suite {
  readonly server: TestServer;
  /** A mesh on this file's server, closed after the file. */
  mesh(prefix: string, instance?: string, extra?: Partial<MeshConnectOptions>): Promise<Mesh>;
  /** Run `fn` after the file (before streams are removed), in reverse order of registration. */
  cleanup(fn: () => Promise<unknown>): void;
}

export function useServer(): Suite {
  let server: TestServer | undefined;
  const cleanups: (() => Promise<unknown>)[] = [];
  beforeAll(async () => {
    server = await startTestServer();
  });
  afterAll(async () => {
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
    if (!server) return;
    await removeTestStreams(server);
    await server.dispose();
  });
  const suite: Suite = {
    get server() {
      if (!server) throw new Error("the test server starts in beforeAll");
      return server;
    },
    async mesh(prefix, instance = "gw1", extra = {}) {
      const m = await openMesh(suite.server, { prefix, instance, ...extra });
      cleanups.push(() => m.close());
      return m;
    },
    cleanup(fn) {
      cleanups.push(fn);
    },
  };
  return suite;
}
