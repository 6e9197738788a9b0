export * from "./legacy-tokens.js";
