export * from "./session-key.js";
export * from "./token.js";
