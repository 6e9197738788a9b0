import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/e2e/**/*.e2e.ts"],
    pool: "forks",
    maxWorkers: 1,
    testTimeout: 300_000,
    hookTimeout: 300_000,
    env: { CLAWMESH_LOG_LEVEL: process.env.CLAWMESH_LOG_LEVEL ?? "error" },
  },
});
