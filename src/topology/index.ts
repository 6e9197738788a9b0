export * from "./names.js";
export * from "./features.js";
export * from "./provision.js";
export * from "./typed-bucket.js";
export * from "./authorization.js";
