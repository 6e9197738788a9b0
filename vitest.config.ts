import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    pool: "forks",
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Two cores: more workers only make nats-server processes fight for CPU.
    maxWorkers: 2,
    env: { CLAWMESH_LOG_LEVEL: process.env.CLAWMESH_LOG_LEVEL ?? "error" },
  },
});
