/**
 * `clawmesh/testing`: real servers and helpers for tests of clawmesh and of code built on it.
 * Every server is a real nats-server on a free loopback port with its own store.
 */
export { LocalNatsServer, type LocalServerOptions } from "../server/local-server.js";
export { startTestServer, type TestServer } from "./server.js";
export { TestCluster } from "./cluster.js";
export { Latch } from "./latch.js";
export { uniquePrefix } from "./prefix.js";
export { MeshInspector } from "./inspector.js";
export { TcpProxy } from "./tcp-proxy.js";
