import { randomBytes } from "node:crypto";

/**
 * A subject prefix of its own for one test: its streams and buckets are its own, as a fresh queue
 * per test is in BullMQ. Remove them afterwards with `MeshInspector.removePrefix`.
 */
export function uniquePrefix(): string {
  return `t${randomBytes(5).toString("hex")}`;
}
