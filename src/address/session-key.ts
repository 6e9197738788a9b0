/**
 * OpenClaw session keys -> mesh session addresses.
 *
 * A key is `agent:<agentId>:<rest>`. The mesh splits `<rest>` at its first `:` into `channel` (the
 * key's kind: `main`, `direct`, `telegram`, `cron`, `subagent`, ...) and `session` (everything after,
 * possibly empty). Two shapes get special treatment, as in OpenClaw:
 * - run-scoped cron keys `cron:<job>:run:<run>` fold onto their durable session `cron:<job>`; the run
 *   id is kept as metadata and never becomes part of a subject, so nothing is ever addressed to a run
 *   that can end (incident 000);
 * - thread keys `<base>:thread:<id>` stay sessions of their own; `thread` is exposed for hosts.
 * The instance (a gateway's configured id) is part of every address because `agent:main:main`
 * exists in every gateway.
 */
import { InvalidAddressError } from "../errors.js";
import { encodeToken } from "./token.js";

export interface SessionAddress {
  /** The gateway (OpenClaw instance) that owns the session. */
  readonly instance: string;
  /** OpenClaw agent id, lowercased. */
  readonly agent: string;
  /** First segment of the key's rest: the session's kind or channel (`main`, `telegram`, `cron`, ...). */
  readonly channel: string;
  /** The rest of the key after the channel segment (may be empty, e.g. for `agent:x:main`). */
  readonly session: string;
  /** Run id of a run-scoped key that was folded onto this session. Metadata only. */
  readonly run?: string;
  /** Thread id when the key ends in `:thread:<id>`. Part of `session` too. */
  readonly thread?: string;
}

const ID_RE = /^[a-z0-9][a-z0-9_-]{0,63}$/;
const AGENT_RE = /^[a-z0-9][a-z0-9_-]{0,63}$/i;
/** Encoded tokens stay well under NATS's control-line limit and the filesystem's name limit. */
const MAX_PART_CHARS = 256;

/**
 * nats-server's default `max_control_line`: the longest protocol line (`PUB`, `HPUB`, `SUB`) it
 * accepts. A longer one closes the connection (and the client's reconnect sends it again).
 */
export const SERVER_MAX_CONTROL_LINE = 4096;
/** Room kept on a publish line beside its subject: the verb, the reply subject and the sizes. */
export const PUBLISH_LINE_HEADROOM = 512;
/**
 * The longest subject the mesh builds around a session's tokens, without them:
 * `<prefix: 32>.in.<to instance: 64>.<from instance: 64>.` + `.` + `<kind: 4 words of 32>`.
 */
export const SUBJECT_FRAME_MAX_BYTES = 32 + ".in.".length + 64 + 1 + 64 + 1 + 1 + (4 * 32 + 3);
/**
 * The longest a session may be in subject form (`<agent>.<channel>.<session>`, encoded tokens), so
 * that every subject the mesh builds for it, with the longest prefix, instance ids and kind, fits
 * the server's control line with the headroom a publish needs.
 */
export const MAX_SESSION_SUBJECT_BYTES = SERVER_MAX_CONTROL_LINE - PUBLISH_LINE_HEADROOM - SUBJECT_FRAME_MAX_BYTES;

/** Validate a gateway instance id (also used verbatim in subjects, stream and bucket names). */
export function assertInstanceId(instance: string): string {
  if (!ID_RE.test(instance)) {
    throw new InvalidAddressError(instance, "an instance id is 1-64 characters of a-z, 0-9, '_' or '-', starting with a letter or digit");
  }
  return instance;
}

export function parseSessionKey(key: string, instance: string): SessionAddress {
  assertInstanceId(instance);
  if (typeof key !== "string") throw new InvalidAddressError(String(key), "a session key must be a string");
  if (!key.startsWith("agent:")) throw new InvalidAddressError(key, "a session key starts with 'agent:<agentId>:'");
  const afterPrefix = key.slice("agent:".length);
  const colon = afterPrefix.indexOf(":");
  if (colon < 0) throw new InvalidAddressError(key, "missing the part after the agent id (e.g. 'agent:main:main')");
  const agentRaw = afterPrefix.slice(0, colon);
  if (!AGENT_RE.test(agentRaw)) {
    throw new InvalidAddressError(key, `agent id ${JSON.stringify(agentRaw)} must be 1-64 characters of letters, digits, '_' or '-'`);
  }
  const rest = afterPrefix.slice(colon + 1);
  if (rest.length === 0) throw new InvalidAddressError(key, "the session part after the agent id is empty");
  const split = rest.indexOf(":");
  const channel = split < 0 ? rest : rest.slice(0, split);
  let session = split < 0 ? "" : rest.slice(split + 1);
  if (channel.length === 0) throw new InvalidAddressError(key, "the channel segment (first part after the agent id) is empty");

  let run: string | undefined;
  if (channel === "cron") {
    const at = session.indexOf(":run:");
    if (at >= 0) {
      run = session.slice(at + ":run:".length);
      session = session.slice(0, at);
      if (run.length === 0) throw new InvalidAddressError(key, "the run id after ':run:' is empty");
      if (session.length === 0) throw new InvalidAddressError(key, "the cron job id before ':run:' is empty");
    }
  }
  let thread: string | undefined;
  const t = session.lastIndexOf(":thread:");
  if (t >= 0 || session.startsWith("thread:")) {
    thread = t >= 0 ? session.slice(t + ":thread:".length) : session.slice("thread:".length);
    if (thread.length === 0) throw new InvalidAddressError(key, "the thread id after ':thread:' is empty");
  }
  for (const [name, part] of [["channel", channel], ["session", session], ["run", run ?? ""]] as const) {
    if (part.length > MAX_PART_CHARS) throw new InvalidAddressError(key, `the ${name} part is longer than ${MAX_PART_CHARS} characters`);
    if (!part.isWellFormed()) throw new InvalidAddressError(key, `the ${name} part contains an unpaired UTF-16 surrogate`);
  }
  const address: SessionAddress = { instance, agent: agentRaw.toLowerCase(), channel, session };
  const encoded = encodeToken(address.agent).length + 1 + encodeToken(channel).length + 1 + encodeToken(session).length;
  if (encoded > MAX_SESSION_SUBJECT_BYTES) {
    throw new InvalidAddressError(
      key,
      `it takes ${encoded} bytes in subject form (agent.channel.session, each UTF-8 byte other than A-Z a-z 0-9 _ - written as 3); ` +
        `the limit is ${MAX_SESSION_SUBJECT_BYTES} bytes, so that every subject for the session fits nats-server's max_control_line of ${SERVER_MAX_CONTROL_LINE} bytes. Use a shorter key`,
    );
  }
  return { ...address, ...(run !== undefined && { run }), ...(thread !== undefined && { thread }) };
}

/** The durable session key (never run-scoped) of an address. */
export function sessionKeyOf(address: Pick<SessionAddress, "agent" | "channel" | "session">): string {
  const rest = address.session.length === 0 ? address.channel : `${address.channel}:${address.session}`;
  return `agent:${address.agent}:${rest}`;
}

/** The key a host used, including the run when the address came from a run-scoped key. */
export function originalKeyOf(address: SessionAddress): string {
  return address.run === undefined ? sessionKeyOf(address) : `${sessionKeyOf(address)}:run:${address.run}`;
}

/** Display form used in logs and errors: `<instance>/<session key>`. */
export function describeAddress(address: SessionAddress): string {
  return `${address.instance}/${sessionKeyOf(address)}`;
}

/** Two addresses name the same durable session (run and thread metadata aside). */
export function sameSession(a: SessionAddress, b: SessionAddress): boolean {
  return a.instance === b.instance && a.agent === b.agent && a.channel === b.channel && a.session === b.session;
}
