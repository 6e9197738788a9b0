/**
 * A loopback TCP proxy for partition tests: clients connect to the proxy, the proxy connects to the
 * real server, and a test can freeze the link (bytes are held, sockets stay open, as when a network
 * path goes silent), in both directions or in one (the server gets a request, its answer is held),
 * heal it (everything held is delivered, in order), or cut every connection (as when a middlebox
 * resets them; held bytes are lost). Only node:net; no timers of its own.
 */
import { createServer, connect, type AddressInfo, type Server, type Socket } from "node:net";

export interface TcpProxyTarget {
  readonly host: string;
  readonly port: number;
}

export interface TcpProxyOptions {
  readonly target: TcpProxyTarget;
}

/**
 * One direction of one connection. Every chunk read from `src` goes through `held`, so a chunk read
 * just before a freeze is held like the rest and the order never changes. While frozen (or while
 * `dst` pushes back) `src` is paused: what the peer keeps sending waits in the kernel, which is how
 * a stalled path looks to it.
 */
class Flow {
  private readonly held: Buffer[] = [];
  private srcEnded = false;
  private endForwarded = false;
  private waitingForDrain = false;

  constructor(
    private readonly src: Socket,
    private readonly dst: Socket,
    private readonly frozen: () => boolean,
  ) {
    src.on("data", (chunk: Buffer) => {
      this.held.push(chunk);
      this.pump();
    });
    // A FIN is part of the byte stream: it is held behind the data like a chunk. A socket that
    // dies without one (reset) ends the stream at the same point.
    src.on("end", () => this.finish());
    src.on("close", () => this.finish());
    dst.on("drain", () => {
      this.waitingForDrain = false;
      this.pump();
    });
  }

  pump(): void {
    if (this.frozen()) {
      this.src.pause();
      return;
    }
    if (this.dst.destroyed || this.dst.writableEnded) {
      // Nobody left to receive these bytes; the peer's own close tells its side.
      this.held.length = 0;
    }
    // write() queues in order even when it returns false; false only asks us to stop reading.
    for (const chunk of this.held.splice(0)) if (!this.dst.write(chunk)) this.waitingForDrain = true;
    if (this.srcEnded && !this.endForwarded && !this.dst.destroyed) {
      this.endForwarded = true;
      this.dst.end();
    }
    if (this.waitingForDrain) this.src.pause();
    else if (!this.srcEnded) this.src.resume();
  }

  private finish(): void {
    if (this.srcEnded) return;
    this.srcEnded = true;
    this.pump();
  }
}

export type FlowDirection = "toServer" | "toClient";

/** A client connection and, once dialled, its connection to the target. */
class Link {
  upstream: Socket | undefined;
  private flows: Flow[] = [];

  constructor(
    readonly client: Socket,
    private readonly target: TcpProxyTarget,
    private readonly frozen: (direction: FlowDirection) => boolean,
    private readonly gone: (link: Link) => void,
  ) {
    // Errors arrive again as 'close' (with hadError); the flows treat that as the end of input.
    client.on("error", () => undefined);
    client.once("close", () => this.closed());
  }

  /** Connect to the target; the client's bytes wait in its (paused) socket until then. */
  dial(): void {
    const upstream = connect({ host: this.target.host, port: this.target.port, allowHalfOpen: true });
    this.upstream = upstream;
    upstream.on("error", () => undefined);
    upstream.once("connect", () => {
      this.flows = [new Flow(this.client, upstream, () => this.frozen("toServer")), new Flow(upstream, this.client, () => this.frozen("toClient"))];
      for (const f of this.flows) f.pump();
    });
    upstream.once("close", () => {
      // Target refused or vanished before any byte flowed: the client must see it too.
      if (this.flows.length === 0) this.client.destroy();
      this.closed();
    });
  }

  pump(): void {
    for (const f of this.flows) f.pump();
  }

  /** RST both sides where the socket allows it (a connecting socket resets once connected). */
  reset(): void {
    for (const s of [this.client, this.upstream]) {
      if (!s || s.destroyed) continue;
      try {
        s.resetAndDestroy();
      } catch {
        s.destroy();
      }
    }
  }

  private closed(): void {
    if (this.client.destroyed && (this.upstream === undefined || this.upstream.destroyed)) this.gone(this);
  }
}

export class TcpProxy {
  private readonly links = new Set<Link>();
  /** Callers of `drained()` waiting for the last connection to close. */
  private drainWaiters: (() => void)[] = [];
  /** Accepted while frozen: dialled on heal, so the target sees no connection during a partition. */
  private readonly waiting: Link[] = [];
  private readonly frozenFlows = new Set<FlowDirection>();
  private readonly frozen = (direction: FlowDirection): boolean => this.frozenFlows.has(direction);

  private constructor(
    private readonly server: Server,
    private readonly target: TcpProxyTarget,
  ) {}

  /** Listen on 127.0.0.1 on a free port, forwarding each connection to `target`. */
  static async start(opts: TcpProxyOptions): Promise<TcpProxy> {
    // allowHalfOpen: a FIN from one side is forwarded when its turn comes, not acted on at once.
    const server = createServer({ allowHalfOpen: true, pauseOnConnect: true });
    const proxy = new TcpProxy(server, opts.target);
    server.on("connection", (socket: Socket) => proxy.accept(socket));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => {
        server.off("error", reject);
        resolve();
      });
    });
    return proxy;
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  /** Client connections currently open (including ones held while frozen). */
  get connections(): number {
    return this.links.size;
  }

  /** Resolves once no client connection is open (a closed client's link goes when both sockets closed). */
  drained(): Promise<void> {
    if (this.links.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  /**
   * Stop forwarding on every connection, in both directions or only one (`toClient`: what the
   * client sends reaches the server, the answers are held); sockets stay open, bytes are held.
   */
  freeze(direction: "both" | FlowDirection = "both"): void {
    if (direction !== "toClient") this.frozenFlows.add("toServer");
    if (direction !== "toServer") this.frozenFlows.add("toClient");
    for (const link of this.links) link.pump();
  }

  /** Deliver everything held, in order, and forward again; dial connections accepted meanwhile. */
  heal(): void {
    this.frozenFlows.clear();
    for (const link of this.links) link.pump();
    for (const link of this.waiting.splice(0)) if (!link.client.destroyed) link.dial();
  }

  /** Reset every current connection (held bytes are dropped, as a reset drops them on a wire). */
  cutAll(): void {
    for (const link of [...this.links]) link.reset();
    this.waiting.length = 0;
  }

  /** Stop listening and reset what is still connected. */
  async stop(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.cutAll();
    await closed;
  }

  private accept(client: Socket): void {
    const link = new Link(client, this.target, this.frozen, (l) => {
      this.links.delete(l);
      if (this.links.size === 0) for (const w of this.drainWaiters.splice(0)) w();
    });
    this.links.add(link);
    if (this.frozenFlows.size > 0) this.waiting.push(link);
    else link.dial();
  }
}
