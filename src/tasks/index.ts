export * from "./registry.js";
export * from "./completion.js";
export * from "./await.js";
export * from "./notifier.js";
