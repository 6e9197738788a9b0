export * from "./sessions.js";
export * from "./watches.js";
export * from "./directory.js";
export * from "./janitor.js";
