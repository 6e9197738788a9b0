/**
 * clawmesh command line:
 *   start      run an embedded mesh (a local nats-server child with JetStream) in the foreground
 *   stop       stop the mesh `start` is running
 *   status     print the running mesh (--wait N: wait up to N seconds for it)
 *   provision  create the streams and buckets of instances
 *   send       send a message to a session
 *   take       show a session's pending messages (and confirm them)
 *   parked     list | redrive <seq>: undeliverable messages
 * Connection: --server (else $CLAWMESH_SERVERS, else the running embedded mesh, else 127.0.0.1:4222),
 * --instance (else $CLAWMESH_INSTANCE, else "local"), --prefix (else "mesh"). A one-shot command
 * waits out a server restart of up to about 10 s, then fails; `start` reconnects forever.
 */
import { parseArgs } from "node:util";
import { readFileSync } from "node:fs";
import { generateAuthorization, type AuthSpec } from "../topology/index.js";
import { join } from "node:path";
import { Mesh } from "../mesh.js";
import type { MeshAuth } from "../transport/credentials.js";
import { MeshError } from "../errors.js";
import { LocalNatsServer } from "../server/local-server.js";
import { STATE_DIR, clearRunning, processAlive, readRunning, writeRunning } from "./state.js";

const DEFAULT_PORT = 4333;

const options = {
  server: { type: "string" },
  instance: { type: "string" },
  prefix: { type: "string" },
  port: { type: "string" },
  store: { type: "string" },
  to: { type: "string" },
  "to-instance": { type: "string" },
  from: { type: "string" },
  message: { type: "string" },
  json: { type: "string" },
  kind: { type: "string" },
  session: { type: "string" },
  max: { type: "string" },
  "no-confirm": { type: "boolean" },
  wait: { type: "string" },
  spec: { type: "string" },
  user: { type: "string" },
  password: { type: "string" },
  token: { type: "string" },
  nkey: { type: "string" },
  creds: { type: "string" },
  "tls-ca": { type: "string" },
  "tls-cert": { type: "string" },
  "tls-key": { type: "string" },
  "inbox-prefix": { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

type Flags = ReturnType<typeof parseArgs<{ options: typeof options; allowPositionals: true }>>["values"];

const USAGE = `usage: clawmesh <start|stop|status|provision|send|take|parked> [flags]
  clawmesh start [--port ${DEFAULT_PORT}] [--store .clawmesh/data] [--instance local]
  clawmesh stop
  clawmesh status [--wait SECONDS]
  clawmesh provision INSTANCE...
  clawmesh send --to SESSION_KEY [--to-instance ID] [--from SESSION_KEY] (--message TEXT | --json JSON) [--kind KIND]
  clawmesh take --session SESSION_KEY [--max N] [--no-confirm]
  clawmesh parked list [--session SESSION_KEY] | clawmesh parked redrive SEQ
  clawmesh auth --spec SPEC.json          (prints nats-server authorization for the instances)
common: --server URL  --instance ID  --prefix PREFIX
credentials (or $CLAWMESH_USER/_PASSWORD/_TOKEN/_NKEY/_CREDS/_TLS_CA/_TLS_CERT/_TLS_KEY/_INBOX_PREFIX):
  --user U --password P | --token T | --nkey SEED_FILE | --creds FILE   [--tls-ca F --tls-cert F --tls-key F]  [--inbox-prefix P]`;

/** Credentials from flags, else the environment (never printed). */
function authFrom(flags: Flags): MeshAuth {
  const pick = (flag: string | undefined, env: string) => flag ?? process.env[`CLAWMESH_${env}`];
  const tls = { caFile: pick(flags["tls-ca"], "TLS_CA"), certFile: pick(flags["tls-cert"], "TLS_CERT"), keyFile: pick(flags["tls-key"], "TLS_KEY") };
  const defined = <T extends object>(o: T) => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
  const hasTls = Object.values(tls).some((v) => v !== undefined);
  return defined({
    user: pick(flags.user, "USER"),
    password: pick(flags.password, "PASSWORD"),
    token: pick(flags.token, "TOKEN"),
    nkeySeedFile: pick(flags.nkey, "NKEY"),
    credsFile: pick(flags.creds, "CREDS"),
    inboxPrefix: pick(flags["inbox-prefix"], "INBOX_PREFIX"),
    ...(hasTls && { tls: defined(tls) }),
  });
}

async function main(argv: string[]): Promise<number> {
  const { values: flags, positionals } = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  const [command, ...rest] = positionals;
  if (flags.help || !command) {
    console.log(USAGE);
    return command || flags.help ? 0 : 2;
  }
  switch (command) {
    case "start":
      return start(flags);
    case "stop":
      return stop();
    case "status":
      return status(flags);
    case "provision":
      return withMesh(flags, async (mesh) => {
        for (const instance of rest) await mesh.admin.provision(instance);
        console.log(`provisioned: ${[mesh.instance, ...rest].join(", ")}`);
      });
    case "send":
      return withMesh(flags, async (mesh) => {
        if (!flags.to) throw new MeshError("usage", "send needs --to SESSION_KEY");
        const body = flags.json !== undefined ? (JSON.parse(flags.json) as never) : (flags.message ?? "");
        const r = await mesh.send({
          from: flags.from ?? "agent:cli:main",
          to: flags["to-instance"] ? { sessionKey: flags.to, instance: flags["to-instance"] } : flags.to,
          body,
          ...(flags.kind && { kind: flags.kind }),
        });
        console.log(JSON.stringify({ sent: r.id, seq: r.seq, stream: r.stream, duplicate: r.duplicate }));
      });
    case "take":
      return withMesh(flags, async (mesh) => {
        if (!flags.session) throw new MeshError("usage", "take needs --session SESSION_KEY");
        const inbox = await mesh.sessions.openInbox(flags.session);
        try {
          const batch = await inbox.take({ max: flags.max ? Number(flags.max) : 100 });
          for (const m of batch.messages) console.log(JSON.stringify({ id: m.id, kind: m.kind, from: m.from, sentAt: m.sentAt, body: m.body }));
          if (flags["no-confirm"]) await batch.release();
          else await batch.confirm();
          console.error(`${batch.messages.length} message(s)${flags["no-confirm"] ? " (not confirmed)" : " confirmed"}`);
        } finally {
          await inbox.close();
        }
      });
    case "auth": {
      if (!flags.spec) throw new MeshError("usage", "auth needs --spec SPEC.json");
      process.stdout.write(generateAuthorization(JSON.parse(readFileSync(flags.spec, "utf8")) as AuthSpec));
      return 0;
    }
    case "parked":
      return withMesh(flags, async (mesh) => {
        if (rest[0] === "redrive") {
          const seq = Number(rest[1]);
          if (!Number.isInteger(seq) || seq < 1) throw new MeshError("usage", "parked redrive needs a parked sequence number");
          console.log(JSON.stringify(await mesh.parked.redrive(seq)));
          return;
        }
        for (const p of await mesh.parked.list(flags.session)) console.log(JSON.stringify(p));
      });
    default:
      console.error(USAGE);
      return 2;
  }
}

function serverUrl(flags: Flags): string {
  return flags.server ?? process.env.CLAWMESH_SERVERS ?? readRunning()?.url ?? "nats://127.0.0.1:4222";
}

async function withMesh(flags: Flags, fn: (mesh: Mesh) => Promise<void>): Promise<number> {
  const mesh = await Mesh.connect({
    servers: serverUrl(flags).split(","),
    instance: flags.instance ?? process.env.CLAWMESH_INSTANCE ?? readRunning()?.instance ?? "local",
    prefix: flags.prefix ?? process.env.CLAWMESH_PREFIX ?? readRunning()?.prefix ?? "mesh",
    // A one-shot call rides out a short server restart, then gives up: after about 10 s without a
    // server the connection closes and an unacknowledged send is reported (with its id).
    reconnect: { maxAttempts: 20, timeWaitMs: 500 },
    sendRetryMs: 10_000,
    auth: authFrom(flags),
    connection: { name: "clawmesh-cli" },
  });
  try {
    await fn(mesh);
    return 0;
  } finally {
    await mesh.close();
  }
}

async function start(flags: Flags): Promise<number> {
  const running = readRunning();
  if (running && processAlive(running.supervisorPid)) {
    console.log(`clawmesh is already running at ${running.url} (pid ${running.supervisorPid})`);
    return 0;
  }
  const instance = flags.instance ?? process.env.CLAWMESH_INSTANCE ?? "local";
  const prefix = flags.prefix ?? process.env.CLAWMESH_PREFIX ?? "mesh";
  const storeDir = flags.store ?? join(STATE_DIR, "data");
  const port = flags.port ? Number(flags.port) : DEFAULT_PORT;
  const server = await LocalNatsServer.start({ storeDir, port });
  let stopping = false;
  let mesh: Mesh | undefined;
  const shutdown = async () => {
    if (stopping) return;
    stopping = true;
    await mesh?.close().catch(() => undefined);
    await server.stop();
    clearRunning();
    console.log("clawmesh stopped");
    process.exit(0);
  };
  process.on("SIGINT", () => void shutdown());
  process.on("SIGTERM", () => void shutdown());
  // The embedded mesh is a long-lived host of its instance: it runs the janitor.
  mesh = await Mesh.connect({ servers: server.url, instance, prefix, janitor: true });
  writeRunning({ url: server.url, serverPid: server.pid!, supervisorPid: process.pid, storeDir, version: server.version, instance, prefix });
  console.log(`clawmesh ready at ${server.url} (nats-server ${server.version}, store ${storeDir}, instance ${instance}); Ctrl-C or 'npm stop' stops it`);
  await new Promise(() => {});
  return 0;
}

async function stop(): Promise<number> {
  const running = readRunning();
  if (!running || !processAlive(running.supervisorPid)) {
    clearRunning();
    console.log("clawmesh is not running");
    return 0;
  }
  process.kill(running.supervisorPid, "SIGTERM");
  const deadline = Date.now() + 15_000;
  while (processAlive(running.supervisorPid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  if (processAlive(running.supervisorPid)) {
    console.error(`clawmesh (pid ${running.supervisorPid}) did not stop in 15 s`);
    return 1;
  }
  console.log("clawmesh stopped");
  return 0;
}

async function status(flags: Flags): Promise<number> {
  const deadline = Date.now() + Number(flags.wait ?? 0) * 1000;
  for (;;) {
    const running = readRunning();
    if (running && processAlive(running.supervisorPid)) {
      console.log(JSON.stringify(running));
      return 0;
    }
    if (Date.now() >= deadline) {
      console.error("clawmesh is not running (start it with: npm start)");
      return 1;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    console.error(err instanceof MeshError || err instanceof TypeError ? `clawmesh: ${err.message}` : err);
    process.exitCode = 1;
  },
);
