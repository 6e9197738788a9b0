export * from "./mesh-session.js";
export * from "./services.js";
export * from "./spawn.js";
