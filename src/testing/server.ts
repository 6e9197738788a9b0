/**
 * One real nats-server per test file: a container when a Docker engine really answers, otherwise a
 * local nats-server process on a free loopback port with its own temp store. Both can be SIGKILLed
 * and restarted on the same store.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LocalNatsServer } from "../server/local-server.js";

export interface TestServer {
  readonly url: string;
  readonly version: string;
  readonly storeDir: string;
  /** SIGKILL the server. */
  kill(): Promise<void>;
  /** Start it again on the same store (and address). */
  restart(): Promise<void>;
  /** Stop it and remove its store. */
  dispose(): Promise<void>;
}

export async function startTestServer(): Promise<TestServer> {
  const mode = process.env.CLAWMESH_TEST_SERVER ?? "auto";
  if (mode !== "local" && (await dockerEngineAnswers())) return startContainer();
  return startLocal();
}

async function startLocal(): Promise<TestServer> {
  const storeDir = mkdtempSync(join(tmpdir(), "clawmesh-test-"));
  const server = await LocalNatsServer.start({ storeDir });
  return {
    get url() {
      return server.url;
    },
    get version() {
      return server.version;
    },
    storeDir,
    kill: () => server.kill(),
    restart: () => server.restart(),
    async dispose() {
      await server.stop();
      rmSync(storeDir, { recursive: true, force: true });
    },
  };
}

/** testcontainers fails fast (a few ms) when no engine runs; a docker CLI alone does not count. */
async function dockerEngineAnswers(): Promise<boolean> {
  try {
    const { getContainerRuntimeClient } = await import("testcontainers");
    await getContainerRuntimeClient();
    return true;
  } catch {
    return false;
  }
}

async function startContainer(): Promise<TestServer> {
  const { GenericContainer } = await import("testcontainers");
  const storeDir = mkdtempSync(join(tmpdir(), "clawmesh-test-"));
  const image = process.env.CLAWMESH_TEST_IMAGE ?? "nats:2.10-alpine";
  const container = await new GenericContainer(image)
    .withCommand(["-js", "-sd", "/data"])
    .withBindMounts([{ source: storeDir, target: "/data" }])
    .withExposedPorts(4222)
    .start();
  let url = `nats://${container.getHost()}:${container.getMappedPort(4222)}`;
  const version = image.split(":")[1] ?? "";
  return {
    get url() {
      return url;
    },
    version,
    storeDir,
    async kill() {
      await container.exec(["kill", "-9", "1"]).catch(() => undefined);
    },
    async restart() {
      await container.restart();
      url = `nats://${container.getHost()}:${container.getMappedPort(4222)}`;
    },
    async dispose() {
      await container.stop();
      rmSync(storeDir, { recursive: true, force: true });
    },
  };
}
