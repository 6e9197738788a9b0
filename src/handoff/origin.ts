/**
 * The one adapter from a host's context to an origin: where the conversation lives. The OpenClaw
 * plugin passes the context OpenClaw gives its tool factories and message hooks; tests pass the
 * same shapes. Nothing here reads model output.
 */
import type { SessionAddress } from "../address/index.js";
import type { DeliveryTarget, Origin } from "../wire/index.js";

/** The fields of OpenClaw's tool-factory context (and message-hook context) the mesh reads. */
export interface HostContext {
  readonly messageChannel?: string;
  readonly agentAccountId?: string;
  readonly deliveryContext?: {
    readonly channel?: string;
    readonly to?: string;
    readonly accountId?: string;
    readonly threadId?: string | number;
  };
  readonly nativeChannelId?: string;
  /** The inbound message that started the turn (message_received / before_dispatch context). */
  readonly message?: {
    readonly messageId?: string | number;
    readonly threadId?: string | number;
    readonly replyToId?: string | number;
  };
}

const str = (v: string | number | undefined): string | undefined => (v === undefined || v === "" ? undefined : String(v));

/**
 * Origin of a turn, or undefined for an internal turn with no user conversation.
 * Platform mapping: Telegram reply chains -> replyToMessageId (the user's message); Telegram
 * forum topics (a thread id in a group chat) -> topicId; Discord/Slack and others -> threadId.
 */
export function originFromHostContext(session: SessionAddress, ctx: HostContext): Origin | undefined {
  const channel = str(ctx.deliveryContext?.channel ?? ctx.messageChannel)?.toLowerCase();
  const to = str(ctx.deliveryContext?.to ?? ctx.nativeChannelId);
  if (!channel || !to) return undefined;
  const accountId = str(ctx.deliveryContext?.accountId ?? ctx.agentAccountId);
  const thread = str(ctx.deliveryContext?.threadId ?? ctx.message?.threadId);
  const messageId = str(ctx.message?.messageId);
  const target: DeliveryTarget =
    channel === "telegram"
      ? {
          channel,
          to,
          ...(thread !== undefined && { topicId: thread }),
          ...(messageId !== undefined && { replyToMessageId: messageId }),
        }
      : { channel, to, ...(thread !== undefined && { threadId: thread }) };
  const { run: _run, ...address } = session;
  return { ...target, ...(accountId !== undefined && { accountId }), session: address };
}

/** The delivery target part of an origin. */
export function targetOf(origin: Origin): DeliveryTarget {
  const { session: _s, ...target } = origin;
  return target;
}
