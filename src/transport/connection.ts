/**
 * One reader of a connection's status events for the whole mesh: whether the connection is up
 * right now, and callbacks for the moments it drops and comes back. Live waits (the session
 * watcher behind `await`, `send` with a wait, `nextArrival`) restart on `reconnect`; the publish
 * path gives up on acknowledgements the drop made unreachable.
 *
 * The client discards whatever is written while it is disconnected (each dial attempt starts with
 * an empty outbound buffer), so a request made during an outage is never sent and can only time
 * out, even when the server is back a moment later. `gate` hands the mesh a view of the connection
 * whose requests wait for the connection (within their own timeout) before being sent.
 */
import type { Msg, NatsConnection, Payload, RequestOptions, Status } from "@nats-io/transport-node";

export type ConnectionListener = () => void;

export class ConnectionState {
  private readonly onUp = new Set<ConnectionListener>();
  private readonly onDown = new Set<ConnectionListener>();
  private up = true;
  private readonly statuses: AsyncIterable<Status>;

  constructor(private readonly nc: NatsConnection) {
    this.statuses = nc.status();
    void this.follow();
  }

  /**
   * Stop following the connection: a mesh attached to a connection its caller keeps open must not
   * leave its status reader on it (one per mesh ever attached, until the connection closes).
   */
  close(): void {
    this.onUp.clear();
    this.onDown.clear();
    (this.statuses as { stop?: () => void }).stop?.();
  }

  /** False between a disconnect and the next reconnect, and once closed. */
  get connected(): boolean {
    return this.up && !this.nc.isClosed();
  }

  /** Call `fn` each time the connection is re-established; returns an unsubscribe. */
  onReconnect(fn: ConnectionListener): () => void {
    this.onUp.add(fn);
    return () => this.onUp.delete(fn);
  }

  /** Call `fn` each time the connection drops; returns an unsubscribe. */
  onDisconnect(fn: ConnectionListener): () => void {
    this.onDown.add(fn);
    return () => this.onDown.delete(fn);
  }

  /** True at once when connected; else when the connection is back, or false after `timeoutMs` (or if it closes). */
  whenConnected(timeoutMs: number): Promise<boolean> {
    if (this.connected) return Promise.resolve(true);
    if (this.nc.isClosed() || timeoutMs <= 0) return Promise.resolve(false);
    return new Promise((resolve) => {
      const done = (ok: boolean) => {
        clearTimeout(timer);
        off();
        resolve(ok);
      };
      const timer = setTimeout(() => done(false), timeoutMs);
      const off = this.onReconnect(() => done(true));
    });
  }

  /**
   * The connection, with `request` waiting for the connection to be up before sending (its
   * timeout counts the wait). Everything else is the connection itself.
   */
  gate(): NatsConnection {
    const request = async (subject: string, payload?: Payload, opts?: RequestOptions): Promise<Msg> => {
      if (this.connected) return this.nc.request(subject, payload, opts);
      const timeout = opts?.timeout || 1000;
      const started = Date.now();
      await this.whenConnected(timeout);
      return this.nc.request(subject, payload, { ...opts, timeout: Math.max(1, timeout - (Date.now() - started)) } as RequestOptions);
    };
    const bound = new Map<PropertyKey, unknown>();
    return new Proxy(this.nc, {
      get(target, prop) {
        if (prop === "request") return request;
        const v: unknown = Reflect.get(target, prop, target);
        if (typeof v !== "function") return v;
        let b = bound.get(prop);
        if (b === undefined) bound.set(prop, (b = v.bind(target)));
        return b;
      },
    });
  }

  private async follow(): Promise<void> {
    // The status iterator ends when the connection closes.
    for await (const s of this.statuses) {
      if (s.type === "disconnect") {
        this.up = false;
        this.emit(this.onDown);
      } else if (s.type === "reconnect") {
        this.up = true;
        this.emit(this.onUp);
      } else if (s.type === "close") {
        this.up = false;
      }
    }
  }

  private emit(listeners: ReadonlySet<ConnectionListener>): void {
    for (const fn of [...listeners]) {
      try {
        fn();
      } catch {
        // a listener's failure is its own; the others still run
      }
    }
  }
}
