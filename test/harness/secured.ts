/**
 * A mesh in its deployment shape: a real nats-server running the authorization `clawmesh auth`
 * generates, one user per gateway, an operator who provisions, and helpers to act as an instance
 * with a raw connection (for attempts the mesh client would never make).
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { Mesh, type MeshConnectOptions } from "../../src/index.js";
import { LocalNatsServer } from "../../src/server/local-server.js";
import { generateAuthorization, inboxPrefixFor, type AuthSpec } from "../../src/topology/index.js";

export const OPERATOR = { user: "ops", password: "secret-ops-123" } as const;

export interface SecuredMesh {
  readonly server: LocalNatsServer;
  readonly prefix: string;
  /** A mesh client of `instance` on its own credentials (closed by `dispose`). */
  meshAs(instance: string, extra?: Partial<MeshConnectOptions>): Promise<Mesh>;
  /** A raw connection of `instance` on its own credentials and inbox prefix. */
  rawAs(instance: string): Promise<NatsConnection>;
  /** Runs `attempt` on a fresh raw connection of `instance`; what the client and server said. */
  attemptAs(instance: string, attempt: (nc: NatsConnection) => Promise<unknown>): Promise<string>;
  /** Provision instances with the operator credential (instances can create nothing). */
  provision(...instances: string[]): Promise<void>;
  dispose(): Promise<void>;
}

export const passwordOf = (instance: string) => `secret-${instance}-123`;

export async function startSecuredMesh(instances: readonly string[], prefix = "mesh", jetstream: AuthSpec["jetstream"] = {}): Promise<SecuredMesh> {
  const dir = mkdtempSync(join(tmpdir(), "clawmesh-auth-"));
  const spec = { prefix, instances: Object.fromEntries(instances.map((i) => [i, { password: passwordOf(i) }])), operator: OPERATOR, jetstream };
  writeFileSync(join(dir, "auth.conf"), generateAuthorization(spec));
  const server = await LocalNatsServer.start({ storeDir: join(dir, "store"), configFile: join(dir, "auth.conf") });
  const opened: Mesh[] = [];
  const rawAs = (instance: string) => connect({ servers: server.url, user: instance, pass: passwordOf(instance), inboxPrefix: inboxPrefixFor(instance), timeout: 2000 });
  return {
    server,
    prefix,
    async meshAs(instance, extra = {}) {
      // The one auth story: the inbox prefix follows from the instance.
      const m = await Mesh.connect({ servers: server.url, instance, prefix, auth: { user: instance, password: passwordOf(instance) }, inbox: { fetchExpiresMs: 1000 }, ...extra });
      opened.push(m);
      return m;
    },
    rawAs,
    async attemptAs(instance, attempt) {
      const nc = await rawAs(instance);
      const said: string[] = [];
      void (async () => {
        for await (const st of nc.status()) if (st.type === "error") said.push(String((st as { error?: unknown }).error));
      })();
      // A refused request fails at once; an ignored one is reported as "no answer" after the wait.
      const outcome = await Promise.race([attempt(nc).then(() => "succeeded", (e: unknown) => String(e)), new Promise<string>((r) => setTimeout(() => r("no answer"), 3000))]);
      await nc.flush().catch(() => undefined);
      await nc.close().catch(() => undefined);
      return [outcome, ...said].join(" | ");
    },
    async provision(...names) {
      const ops = await Mesh.connect({ servers: server.url, instance: OPERATOR.user, prefix, provision: false, auth: { user: OPERATOR.user, password: OPERATOR.password } });
      for (const i of names) await ops.admin.provision(i);
      await ops.close();
    },
    async dispose() {
      for (const m of opened.reverse()) await m.close().catch(() => undefined);
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
