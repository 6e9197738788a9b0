export * from "./names.js";
export * from "./features.js";
export * from "./provision.js";
export * from "./read-subject.js";
