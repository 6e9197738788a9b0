export * from "./mesh-session.js";
