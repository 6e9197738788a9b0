/**
 * clawmesh command line entry: runs `run` (src/cli/cli.ts) on the process arguments and exits with
 * its code. `clawmesh --help` lists the commands. Connection: --server (else $CLAWMESH_SERVERS,
 * else the running embedded mesh, else 127.0.0.1:4222), --instance (else $CLAWMESH_INSTANCE, else
 * "local"), --prefix (else "mesh"). A one-shot command waits out a server restart of up to about
 * 10 s, then fails; `start` reconnects forever.
 */
import { run } from "./cli.js";

run(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`clawmesh: failed: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
