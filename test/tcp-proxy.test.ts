import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, connect as netConnect, type AddressInfo, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, errors, type NatsConnection, type Status } from "@nats-io/transport-node";
import { LocalNatsServer } from "../src/server/local-server.js";
import { TcpProxy } from "../src/testing/tcp-proxy.js";

/** Echo server: every byte a connection sends comes back on it. Counts the connections it accepted. */
async function startEcho(): Promise<{ server: Server; port: number; accepted: () => number }> {
  let accepted = 0;
  const server = createServer((s) => {
    accepted++;
    s.on("error", () => undefined);
    s.pipe(s);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { server, port: (server.address() as AddressInfo).port, accepted: () => accepted };
}

async function open(port: number): Promise<Socket> {
  const socket = netConnect({ host: "127.0.0.1", port });
  await new Promise<void>((resolve) => socket.once("connect", resolve));
  return socket;
}

/** Collects what a socket receives; `until(n)` resolves once n bytes have arrived. */
function collect(socket: Socket, onData?: (total: number) => void): { bytes: () => Buffer; until: (n: number) => Promise<Buffer> } {
  const chunks: Buffer[] = [];
  let total = 0;
  let waiter: { n: number; resolve: () => void } | undefined;
  socket.on("data", (c: Buffer) => {
    chunks.push(c);
    total += c.length;
    onData?.(total);
    if (waiter && total >= waiter.n) waiter.resolve();
  });
  const bytes = () => Buffer.concat(chunks);
  return {
    bytes,
    until: (n) =>
      total >= n
        ? Promise.resolve(bytes())
        : new Promise<Buffer>((resolve) => {
            waiter = { n, resolve: () => resolve(bytes()) };
          }),
  };
}

/** One echo round trip on a connection that bypasses the proxy: an I/O turn of the event loop. */
function roundTrip(control: Socket): Promise<void> {
  return new Promise((resolve) => {
    control.once("data", () => resolve());
    control.write(".");
  });
}

/** Resolves on the first status event of `type`; the iterator is opened before the cause happens. */
function nextStatus(nc: NatsConnection, type: Status["type"]): Promise<Status> {
  const it = nc.status();
  return (async () => {
    for await (const s of it) if (s.type === type) return s;
    throw new Error(`connection closed before a ${type} event`);
  })();
}

/** Numbered lines, so any loss, duplication or reordering shows in the comparison. */
function lines(from: number, to: number): Buffer {
  let s = "";
  for (let i = from; i < to; i++) s += `line ${i} ${"x".repeat(i % 97)}\n`;
  return Buffer.from(s);
}

describe("TcpProxy: raw bytes", () => {
  let echo: Awaited<ReturnType<typeof startEcho>>;
  let control: Socket;
  beforeAll(async () => {
    echo = await startEcho();
    control = await open(echo.port);
  });
  afterAll(async () => {
    control.destroy();
    await new Promise<void>((resolve) => echo.server.close(() => resolve()));
  });

  it("passes bytes in both directions, complete and in order, across freezes taken mid-stream", async () => {
    const proxy = await TcpProxy.start({ target: { host: "127.0.0.1", port: echo.port } });
    const socket = await open(proxy.port);
    // About 3.6 MB: far more than the socket buffers, so both directions are in flight (and pushing
    // back) whenever a freeze lands. Each freeze is taken from inside a data callback and healed
    // after an I/O turn elsewhere.
    const all = lines(0, 60_000);
    let cycles = 0;
    let nextFreezeAt = 256 * 1024;
    const got = collect(socket, (total) => {
      if (total < nextFreezeAt) return;
      nextFreezeAt += 512 * 1024;
      proxy.freeze();
      cycles++;
      void roundTrip(control).then(() => proxy.heal());
    });
    socket.write(all);
    expect((await got.until(all.length)).equals(all)).toBe(true);
    expect(got.bytes().length).toBe(all.length);
    expect(cycles).toBeGreaterThanOrEqual(5);
    expect(proxy.connections).toBe(1);
    socket.destroy();
    await proxy.stop();
  });

  it("holds a connection accepted while frozen (the target sees nothing) and serves it after heal", async () => {
    const proxy = await TcpProxy.start({ target: { host: "127.0.0.1", port: echo.port } });
    const acceptedBefore = echo.accepted();
    proxy.freeze();
    const socket = await open(proxy.port);
    const got = collect(socket);
    const a = lines(0, 500);
    socket.write(a);
    // Let the proxy accept it; the target must not have been dialled.
    while (proxy.connections === 0) await roundTrip(control);
    await roundTrip(control);
    expect(echo.accepted()).toBe(acceptedBefore);
    expect(got.bytes().length).toBe(0);

    proxy.heal();
    expect((await got.until(a.length)).equals(a)).toBe(true);
    expect(echo.accepted()).toBe(acceptedBefore + 1);
    socket.destroy();
    await proxy.stop();
  });
});

describe("TcpProxy: a NATS client through the proxy", () => {
  let storeDir: string;
  let server: LocalNatsServer;
  let proxy: TcpProxy;
  let direct: NatsConnection;
  /** Requests the server delivered to the responder (on a connection that bypasses the proxy). */
  let delivered = 0;

  beforeAll(async () => {
    storeDir = mkdtempSync(join(tmpdir(), "clawmesh-proxy-"));
    server = await LocalNatsServer.start({ storeDir });
    proxy = await TcpProxy.start({ target: { host: "127.0.0.1", port: server.port } });
    direct = await connect({ servers: server.url });
    direct.subscribe("svc.echo", {
      callback: (_err, msg) => {
        delivered++;
        msg.respond(msg.data);
      },
    });
    await direct.flush();
  });
  afterAll(async () => {
    await direct?.close();
    await proxy?.stop();
    await server?.stop();
    rmSync(storeDir, { recursive: true, force: true });
  });

  it("a request sent while frozen does not complete; it completes after heal", async () => {
    const nc = await connect({ servers: proxy.url, maxReconnectAttempts: -1 });
    await nc.request("svc.echo", "warm-up", { timeout: 5000 });
    const before = delivered;

    proxy.freeze();
    let settled = false;
    const held = nc.request("svc.echo", "held", { timeout: 20_000 }).finally(() => {
      settled = true;
    });
    // The client's own timeout is the clock: a probe sent after `held` times out through the frozen
    // link, and by then `held` has neither completed nor reached the server.
    await expect(nc.request("svc.echo", "probe", { timeout: 300 })).rejects.toBeInstanceOf(errors.TimeoutError);
    expect(settled).toBe(false);
    // A round trip on the direct connection is ordered after anything the server already routed to it.
    await direct.flush();
    expect(delivered).toBe(before);

    proxy.heal();
    const reply = await held;
    expect(new TextDecoder().decode(reply.data)).toBe("held");
    // Both held requests reached the server once, after the heal (the probe's reply finds no waiter).
    await nc.flush();
    await direct.flush();
    expect(delivered).toBe(before + 2);
    await nc.close();
  });

  it("cutAll resets the connection: the client sees a disconnect, reconnects through the proxy and works again", async () => {
    // The previous test's client closed; its link goes once both of its sockets did.
    await proxy.drained();
    const nc = await connect({ servers: proxy.url, maxReconnectAttempts: -1, reconnectTimeWait: 50 });
    await nc.request("svc.echo", "before", { timeout: 5000 });
    expect(proxy.connections).toBe(1);

    const disconnected = nextStatus(nc, "disconnect");
    const reconnected = nextStatus(nc, "reconnect");
    proxy.cutAll();
    await disconnected;
    await reconnected;

    const reply = await nc.request("svc.echo", "after", { timeout: 5000 });
    expect(new TextDecoder().decode(reply.data)).toBe("after");
    expect(proxy.connections).toBe(1);
    await nc.close();
  });
});
