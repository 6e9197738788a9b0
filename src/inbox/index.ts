export * from "./inbox.js";
export * from "./lease.js";
export * from "./parked.js";
export * from "./seen-log.js";
export * from "./session-consumer.js";
export * from "./deliver.js";
export * from "./watcher.js";
