/**
 * The only module that spells subjects, stream, consumer and bucket names and the layout of every
 * KV key. The permission generator reads the same functions, so what the broker allows and what
 * the code writes cannot drift apart. `subjects.md` is the contract these functions implement;
 * change both together.
 *
 * Layout (fixed token positions so broker permissions can pin the sending instance):
 *   <prefix>.in.<toInstance>.<fromInstance>.<agent>.<channel>.<session>.<kind...>
 *   <prefix>.parked.<instance>.<agent>.<channel>.<session>
 *   <prefix>.seen.<instance>.<agent>.<channel>.<session>
 *   <prefix>.alive.<instance>.<holderId>      (core NATS, lease liveness probe)
 */
import { createHash } from "node:crypto";
import { PUBLISH_LINE_HEADROOM, SERVER_MAX_CONTROL_LINE, decodeToken, encodeToken, sessionKeyOf, type SessionAddress } from "../address/index.js";
import { InvalidAddressError } from "../errors.js";
import { KIND_RE } from "../wire/envelope.js";

export const PREFIX_RE = /^[a-z][a-z0-9-]{0,31}$/;

/** Longest subject the mesh publishes to: the server's control line less room for the rest of the line. */
export const MAX_SUBJECT_BYTES = SERVER_MAX_CONTROL_LINE - PUBLISH_LINE_HEADROOM;

/** Token position of each part in an inbox subject (0-based). */
export const INBOX_TOKENS = { to: 2, from: 3, agent: 4, channel: 5, session: 6, kind: 7 } as const;

export interface SessionTokens {
  readonly agent: string;
  readonly channel: string;
  readonly session: string;
}

export function sessionTokens(address: Pick<SessionAddress, "agent" | "channel" | "session">): SessionTokens {
  return { agent: encodeToken(address.agent), channel: encodeToken(address.channel), session: encodeToken(address.session) };
}

const pathCache = new Map<string, string>();
const PATH_CACHE_MAX = 4096;

/** `agent.channel.session` in token form: a session's identity inside one instance. */
export function sessionPath(address: Pick<SessionAddress, "agent" | "channel" | "session">): string {
  // Length-prefixed so no two (channel, session) pairs can share a key.
  const cacheKey = `${address.agent}:${address.channel.length}:${address.channel}:${address.session}`;
  let path = pathCache.get(cacheKey);
  if (path === undefined) {
    const t = sessionTokens(address);
    path = `${t.agent}.${t.channel}.${t.session}`;
    if (pathCache.size >= PATH_CACHE_MAX) pathCache.clear();
    pathCache.set(cacheKey, path);
  }
  return path;
}

/** What a watch is on: a task, or a session. */
export type WatchTargetRef = { readonly taskId: string; readonly requester: string; readonly assignee: string } | { readonly session: SessionAddress };

/** Which side of a task an instance is on. */
export type TaskRole = "requester" | "assignee";

function shortHash(s: string, hexChars: number): string {
  return createHash("sha256").update(s).digest("hex").slice(0, hexChars);
}

export class Names {
  readonly prefix: string;
  constructor(prefix: string) {
    if (!PREFIX_RE.test(prefix)) {
      throw new InvalidAddressError(prefix, "a subject prefix is 1-32 characters of a-z, 0-9 or '-', starting with a letter");
    }
    this.prefix = prefix;
  }

  inboxStream(instance: string): string {
    return `${this.prefix}_in_${instance}`;
  }
  parkedStream(instance: string): string {
    return `${this.prefix}_parked_${instance}`;
  }
  seenStream(instance: string): string {
    return `${this.prefix}_seen_${instance}`;
  }
  leaseBucket(instance: string): string {
    return `${this.prefix}_leases_${instance}`;
  }
  /** Shared by all instances; keys name the two instances a task involves. */
  taskBucket(): string {
    return `${this.prefix}_tasks`;
  }
  /** Session registry; keys start with the owning instance. */
  sessionBucket(): string {
    return `${this.prefix}_sessions`;
  }
  /** Channel directory; keys start with the encoded channel address. */
  directoryBucket(): string {
    return `${this.prefix}_directory`;
  }
  watchBucket(): string {
    return `${this.prefix}_watches`;
  }
  /** Task key -> session, for idempotent spawn. */
  taskKeyBucket(): string {
    return `${this.prefix}_taskkeys`;
  }
  /** Registry key of a session: `<instance>.<agent>.<channel>.<session>` (tokens). */
  sessionRecordKey(session: SessionAddress): string {
    return `${session.instance}.${sessionPath(session)}`;
  }
  /** Task registry key: `<requesterInstance>.<assigneeInstance>.<taskId>`. */
  taskRecordKey(t: { readonly requester: { readonly instance: string }; readonly assignee: { readonly instance: string }; readonly taskId: string }): string {
    return `${t.requester.instance}.${t.assignee.instance}.${t.taskId}`;
  }
  /** Filter over task keys assigned to `instance` (a listing, not a lookup). */
  tasksAssignedTo(instance: string): string {
    return `*.${instance}.*`;
  }
  /** Filter over task keys `instance` asked for (a listing, not a lookup). */
  tasksRequestedBy(instance: string): string {
    return `${instance}.*.*`;
  }
  /**
   * Filter over the task keys with this id that `instance` takes part in as `role`. Task ids are
   * scoped by requester: two requesters may use the same id; one requester never has two.
   */
  taskIdFilter(instance: string, role: TaskRole, taskId: string): string {
    return role === "requester" ? `${instance}.*.${taskId}` : `*.${instance}.${taskId}`;
  }
  /** The parts of a task registry key; undefined when it is not one. */
  parseTaskKey(key: string): { readonly requester: string; readonly assignee: string; readonly taskId: string } | undefined {
    const t = key.split(".");
    return t.length === 3 ? { requester: t[0]!, assignee: t[1]!, taskId: t[2]! } : undefined;
  }
  /**
   * Task-key entry key (idempotent spawn): `<owner>.<instance>.<agent>.<hash of the task key>`,
   * where `owner` is the instance that delegates with the key (the only one the broker lets write
   * it) and `instance` the one whose agent does the work. The agent is lowercased here, once, so
   * every caller finds what any other caller created.
   */
  taskKeyEntryKey(r: { readonly owner: string; readonly taskKey: string; readonly agent: string; readonly instance: string }): string {
    return `${r.owner}.${r.instance}.${r.agent.toLowerCase()}.${shortHash(r.taskKey, 32)}`;
  }
  /**
   * Watch keys start with what they watch, `t.<requester>.<assignee>.<taskId>` or
   * `s.<instance>.<agent>.<channel>.<session>`, then name the watching instance (the only one the
   * broker lets write the key) and the watch id.
   */
  watchTargetKey(target: WatchTargetRef): string {
    return "taskId" in target ? `t.${target.requester}.${target.assignee}.${target.taskId}` : `s.${target.session.instance}.${sessionPath(target.session)}`;
  }
  watchKey(target: WatchTargetRef, watcherInstance: string, watchId: string): string {
    return `${this.watchTargetKey(target)}.${watcherInstance}.${watchId}`;
  }
  /** Filter over the watches on one target, whoever set them. */
  watchesOn(target: WatchTargetRef): string {
    return `${this.watchTargetKey(target)}.*.*`;
  }
  /** Filters that match the one key a watch id of `watcherInstance` can have, whatever it watches. */
  watchIdFilters(watcherInstance: string, watchId: string): string[] {
    return [`t.*.*.*.${watcherInstance}.${watchId}`, `s.*.*.*.*.${watcherInstance}.${watchId}`];
  }
  /** Directory key: `<encoded channel address>.<instance>.<agent>.<session hash>`. */
  directoryKey(channel: string, session: SessionAddress): string {
    return `${encodeToken(channel)}.${session.instance}.${session.agent}.${shortHash(sessionPath(session), 16)}`;
  }
  /** Filter over the directory entries of one channel address. */
  directoryChannelFilter(channel: string): string {
    return `${encodeToken(channel)}.>`;
  }
  /** The channel address a directory key is for. */
  directoryChannelOf(key: string): string {
    return decodeToken(key.split(".")[0]!);
  }

  /**
   * KV subjects an instance may write in the shared buckets: only keys that name it in the
   * position that says whose statement the record is.
   */
  writableRegistryKeys(instance: string): string[] {
    return [
      `$KV.${this.taskBucket()}.${instance}.*.*`,
      `$KV.${this.taskBucket()}.*.${instance}.*`,
      `$KV.${this.sessionBucket()}.${instance}.>`,
      `$KV.${this.directoryBucket()}.*.${instance}.>`,
      `$KV.${this.watchBucket()}.t.*.*.*.${instance}.*`,
      `$KV.${this.watchBucket()}.s.*.*.*.*.${instance}.*`,
      `$KV.${this.taskKeyBucket()}.${instance}.>`,
    ];
  }

  /**
   * Task registry keys an instance may read (a direct get names the key in its API subject, so the
   * broker checks it): only tasks it asked for or works on. Task records hold request titles and
   * results; no other instance reads them.
   */
  readableTaskKeys(instance: string): string[] {
    return [`$KV.${this.taskBucket()}.${instance}.*.*`, `$KV.${this.taskBucket()}.*.${instance}.*`];
  }

  /** Everything addressed to `instance`: the inbox stream's subject. */
  inboxWildcard(instance: string): string {
    return `${this.prefix}.in.${instance}.>`;
  }
  /** One wildcard covers all a session reads: a 2.9 consumer has a single filter subject. */
  sessionFilter(to: SessionAddress): string {
    return `${this.prefix}.in.${to.instance}.*.${sessionPath(to)}.>`;
  }
  inboxSubject(to: SessionAddress, fromInstance: string, kind: string): string {
    if (!KIND_RE.test(kind)) throw new InvalidAddressError(kind, "a message kind is 1-4 dot-separated lowercase words");
    const subject = `${this.prefix}.in.${to.instance}.${fromInstance}.${sessionPath(to)}.${kind}`;
    // Parsed keys always fit; an address from elsewhere (a decoded envelope) is checked here, so
    // an over-long subject is refused before it can cost the connection.
    if (subject.length > MAX_SUBJECT_BYTES) {
      throw new InvalidAddressError(sessionKeyOf(to), `its inbox subject would be ${subject.length} bytes; the limit is ${MAX_SUBJECT_BYTES} (nats-server's max_control_line of ${SERVER_MAX_CONTROL_LINE} bytes less room for the publish line)`);
    }
    return subject;
  }
  parkedWildcard(instance: string): string {
    return `${this.prefix}.parked.${instance}.>`;
  }
  parkedSubject(session: SessionAddress): string {
    return `${this.prefix}.parked.${session.instance}.${sessionPath(session)}`;
  }
  seenWildcard(instance: string): string {
    return `${this.prefix}.seen.${instance}.>`;
  }
  seenSubject(session: SessionAddress): string {
    return `${this.prefix}.seen.${session.instance}.${sessionPath(session)}`;
  }
  aliveSubject(instance: string, holderId: string): string {
    return `${this.prefix}.alive.${instance}.${holderId}`;
  }
  /** The subject every write to a session's lease key is published on (what a waiting contender listens to). */
  leaseKeySubject(session: SessionAddress): string {
    return `$KV.${this.leaseBucket(session.instance)}.${this.leaseKey(session)}`;
  }
  /** KV key of a session's lease inside the instance's lease bucket. */
  leaseKey(session: SessionAddress): string {
    return sessionPath(session);
  }
  /**
   * Durable consumer name of a session. Hashed so it stays short and filesystem-safe whatever the
   * session key; the readable key is kept in the consumer's description.
   */
  sessionConsumer(session: SessionAddress): string {
    return `ses_${shortHash(sessionPath(session), 32)}`;
  }

  /** Parse an inbox subject back into its parts; undefined when it is not one of ours. */
  parseInboxSubject(subject: string): ParsedInboxSubject | undefined {
    const t = subject.split(".");
    if (t.length < 8 || t[0] !== this.prefix || t[1] !== "in") return undefined;
    try {
      return {
        toInstance: t[INBOX_TOKENS.to]!,
        fromInstance: t[INBOX_TOKENS.from]!,
        agent: decodeToken(t[INBOX_TOKENS.agent]!),
        channel: decodeToken(t[INBOX_TOKENS.channel]!),
        session: decodeToken(t[INBOX_TOKENS.session]!),
        kind: t.slice(INBOX_TOKENS.kind).join("."),
      };
    } catch {
      return undefined;
    }
  }
}

export interface ParsedInboxSubject {
  readonly toInstance: string;
  readonly fromInstance: string;
  readonly agent: string;
  readonly channel: string;
  readonly session: string;
  readonly kind: string;
}
