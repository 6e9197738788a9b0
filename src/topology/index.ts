export * from "./names.js";
export * from "./features.js";
export * from "./provision.js";
export * from "./store.js";
export * from "./authorization.js";
export * from "./bucket-feed.js";
