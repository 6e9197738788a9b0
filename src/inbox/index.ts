export * from "./inbox.js";
export * from "./lease.js";
export * from "./parked.js";
export * from "./seen-log.js";
export * from "./session-consumer.js";
export * from "./outbox.js";
export * from "./watcher.js";
export * from "./peek.js";
