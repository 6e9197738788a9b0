export * from "./envelope.js";
export * from "./codec.js";
export * from "./records.js";
export * from "./factory.js";
export * from "./json.js";
