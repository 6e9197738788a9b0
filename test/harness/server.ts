export { startTestServer, type TestServer } from "../../src/testing/index.js";
