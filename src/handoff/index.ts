export * from "./legacy-tokens.js";
export * from "./origin.js";
export * from "./policy.js";
