export * from "./tool.js";
export * from "./mesh-tools.js";
