/** Three nats-server processes on loopback forming a JetStream cluster from deploy/cluster/nats-cluster.conf. */
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { LocalNatsServer } from "../server/local-server.js";

// The same file docker-compose mounts; two levels up from both src/testing and dist/testing.
const CONFIG = resolve(import.meta.dirname, "../../deploy/cluster/nats-cluster.conf");

async function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address() as { port: number };
      s.close(() => ok(port));
    });
    s.on("error", fail);
  });
}

export class TestCluster {
  private constructor(
    readonly nodes: LocalNatsServer[],
    readonly names: string[],
    private readonly dir: string,
  ) {}

  static async start(): Promise<TestCluster> {
    const dir = mkdtempSync(join(tmpdir(), "clawmesh-cluster-"));
    const clientPorts = await Promise.all([0, 1, 2].map(() => freePort()));
    const clusterPorts = await Promise.all([0, 1, 2].map(() => freePort()));
    const routes = Object.fromEntries(clusterPorts.map((p, i) => [`ROUTE_${i + 1}`, `nats://127.0.0.1:${p}`]));
    const names = ["n1", "n2", "n3"];
    const nodes = await Promise.all(
      names.map((name, i) =>
        LocalNatsServer.start({
          storeDir: join(dir, name),
          configFile: CONFIG,
          configOnly: true,
          port: clientPorts[i]!,
          env: { SERVER_NAME: name, CLIENT_LISTEN: `127.0.0.1:${clientPorts[i]}`, CLUSTER_LISTEN: `127.0.0.1:${clusterPorts[i]}`, STORE_DIR: join(dir, name), ...routes },
        }),
      ),
    );
    return new TestCluster(nodes, names, dir);
  }

  get urls(): string[] {
    return this.nodes.map((n) => n.url);
  }

  node(name: string): LocalNatsServer {
    return this.nodes[this.names.indexOf(name)]!;
  }

  async dispose(): Promise<void> {
    await Promise.all(this.nodes.map((n) => n.stop()));
    rmSync(this.dir, { recursive: true, force: true });
  }
}
