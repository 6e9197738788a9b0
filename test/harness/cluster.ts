export { TestCluster } from "../../src/testing/index.js";
