/** Waiting on events, never on the clock. */
import type { NatsConnection } from "@nats-io/transport-node";

/** Resolves when a consumer-deleted advisory for `stream`/`consumer` arrives (e.g. it was reaped). */
export function consumerDeleted(nc: NatsConnection, stream: string, consumer: string): Promise<void> {
  return new Promise((resolve) => {
    const sub = nc.subscribe(`$JS.EVENT.ADVISORY.CONSUMER.DELETED.${stream}.${consumer}`, {
      max: 1,
      callback: () => {
        sub.unsubscribe();
        resolve();
      },
    });
  });
}

/** Polls `probe` until it returns a defined value; for conditions only observable by asking the server. */
export async function until<T>(probe: () => Promise<T | undefined>, what: string | (() => string), limitMs = 20_000): Promise<T> {
  const deadline = Date.now() + limitMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${typeof what === "string" ? what : what()}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
