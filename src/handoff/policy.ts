/**
 * Channel policy for routing overrides: which chats an `announceTarget` may name. Loaded at start
 * from a JSON file (path in `CLAWMESH_CHANNEL_POLICY`, or the mesh option `channelPolicyFile`),
 * validated with zod. No file means no overrides are allowed; inherited origins always are.
 *
 *   { "announce": { "allow": ["telegram:-100*", "discord:1234567890"], "deny": ["telegram:-100666"] } }
 */
import { readFileSync } from "node:fs";
import { z } from "zod";
import { MeshError, ValidationError } from "../errors.js";
import type { DeliveryTarget, Origin } from "../wire/index.js";
import { targetOf } from "./origin.js";

const Pattern = z.string().regex(/^[a-z][a-z0-9_-]{0,31}:.+$/, "a pattern is <platform>:<chat>, * matches anything");

export const ChannelPolicySchema = z.object({
  announce: z
    .object({
      allow: z.array(Pattern).default([]),
      deny: z.array(Pattern).default([]),
    })
    .prefault({}),
});
export type ChannelPolicy = z.output<typeof ChannelPolicySchema>;

export const EMPTY_POLICY: ChannelPolicy = { announce: { allow: [], deny: [] } };

export class ForbiddenRouteError extends MeshError {
  constructor(target: string, why: string) {
    super("forbidden_route", `announcing to ${target} is not allowed: ${why}. Nothing was sent; omit announceTarget to answer where the conversation lives.`);
  }
}

export function loadChannelPolicy(file: string | undefined = process.env.CLAWMESH_CHANNEL_POLICY): ChannelPolicy {
  if (!file) return EMPTY_POLICY;
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(file, "utf8"));
  } catch (err) {
    throw new MeshError("policy_unreadable", `channel policy ${file} could not be read: ${err instanceof Error ? err.message : String(err)}`);
  }
  const parsed = ChannelPolicySchema.safeParse(json);
  if (!parsed.success) throw new ValidationError(`channel policy ${file}`, parsed.error.issues.map((i) => ({ path: i.path.map(String).join("."), message: i.message })));
  return parsed.data;
}

function matches(pattern: string, value: string): boolean {
  const re = new RegExp(`^${pattern.split("*").map((p) => p.replace(/[.+?^${}()|[\]\\]/g, "\\$&")).join(".*")}$`);
  return re.test(value);
}

/** Parse an announce target such as `telegram:-100123`, `telegram:-100123/topic/42`, `discord:1234`. */
export function parseAnnounceTarget(input: string): DeliveryTarget {
  const trimmed = input.trim();
  const colon = trimmed.indexOf(":");
  const channel = trimmed.slice(0, colon).toLowerCase();
  const rest = trimmed.slice(colon + 1).trim();
  if (colon <= 0 || !/^[a-z][a-z0-9_-]{0,31}$/.test(channel) || rest.length === 0) {
    throw new MeshError("invalid_announce_target", `announceTarget ${JSON.stringify(input)} is not <platform>:<chat> (e.g. telegram:-100123, discord:1234567890)`);
  }
  const topic = /^(.+)\/topic\/(\d+)$/.exec(rest);
  return topic ? { channel, to: topic[1]!, topicId: topic[2]! } : { channel, to: rest };
}

export interface RouteOverrides {
  readonly announceTarget?: string;
  readonly announceThreadId?: string;
}

/**
 * The delivery target for announces: the origin's, unless overridden. An override that moves to
 * another chat must be allowed by the policy; a thread override inside the origin's chat is not a
 * move. Throws ForbiddenRouteError before anything is written.
 */
export function resolveDeliveryTarget(origin: Origin | undefined, overrides: RouteOverrides, policy: ChannelPolicy): DeliveryTarget | undefined {
  if (overrides.announceTarget === undefined && overrides.announceThreadId === undefined) return origin && targetOf(origin);
  let target: DeliveryTarget;
  if (overrides.announceTarget !== undefined) {
    const t = parseAnnounceTarget(overrides.announceTarget);
    const sameChat = origin !== undefined && origin.channel === t.channel && origin.to === t.to;
    const accountId = origin?.channel === t.channel ? origin.accountId : undefined;
    target = { ...t, ...(accountId !== undefined && { accountId }) };
    if (!sameChat) checkAllowed(policy, `${t.channel}:${t.to}`);
  } else {
    if (!origin) throw new ForbiddenRouteError(`thread ${overrides.announceThreadId}`, "there is no conversation to take the thread from; give announceTarget too");
    const { replyToMessageId: _r, threadId: _t, ...base } = targetOf(origin);
    target = base;
  }
  if (overrides.announceThreadId !== undefined) {
    const { replyToMessageId: _r, ...rest } = target;
    target = target.channel === "telegram" ? { ...rest, topicId: overrides.announceThreadId } : { ...rest, threadId: overrides.announceThreadId };
  }
  return target;
}

function checkAllowed(policy: ChannelPolicy, chat: string): void {
  const denied = policy.announce.deny.find((p) => matches(p, chat));
  if (denied) throw new ForbiddenRouteError(chat, `the channel policy denies it (${denied})`);
  if (!policy.announce.allow.some((p) => matches(p, chat))) {
    throw new ForbiddenRouteError(chat, policy.announce.allow.length ? `the channel policy allows only ${policy.announce.allow.join(", ")}` : "the channel policy allows no announce overrides");
  }
}
