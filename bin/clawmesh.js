#!/usr/bin/env node
// Entry point of the clawmesh CLI; the code lives in dist/ (built by `npm run build`).
import("../dist/cli/main.js").catch((err) => {
  if (err && err.code === "ERR_MODULE_NOT_FOUND") {
    console.error("clawmesh is not built yet: run `npm run build` (npm start does it for you)");
    process.exit(1);
  }
  throw err;
});
