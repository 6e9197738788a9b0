/**
 * clawmesh: the curated public API. Everything that appears in a public signature, and every error
 * a caller can receive, is exported here; internals (topology, inbox plumbing, wire codecs) are not.
 * The OpenClaw plugin is `clawmesh/openclaw`; test helpers are `clawmesh/testing`.
 */

// The client and its sub-clients.
export { Mesh, type MeshConnectOptions, type SendInput, type SendResult, type SessionRef } from "./mesh.js";
export type { SessionsClient } from "./client/sessions.js";
export type { TasksClient, FinishInput } from "./client/tasks.js";
export type { ChannelsClient } from "./client/channels.js";
export type { ParkedClient } from "./client/parked.js";
export type { AdminClient } from "./client/admin.js";
export { MeshConfigSchema, type MeshConfig, type MeshConfigInput } from "./config.js";
export { MeshAuthSchema, type MeshAuth } from "./transport/credentials.js";

// Sessions, their runs and inboxes.
export { MeshSession, type SendOptions, type SendOutcome, type DelegateOptions, type DelegateOutcome, type DelegateHooks, type DelegateStep, type JsonBody } from "./session/index.js";
export type { Inbox, InboxBatch, InboxMessage, InboxOptions, TakeOptions, ParkedMessage, ParkedDetail, ParkReason, Delivered, PendingMessage, PendingSummary, RedirectOptions, RedirectResult, RedirectedMessage, Tail, TailEvent, Arrival, Arrivals } from "./inbox/index.js";
export { parseSessionKey, sessionKeyOf, originalKeyOf, describeAddress, type SessionAddress } from "./address/index.js";
export type { SessionFilter, WatchTarget } from "./registry/index.js";

// Tasks.
export type { AwaitTarget, AwaitResult, FinishedItem, PendingItem, FinishOutcome, FinishState, FinishHooks, FinishRequest, PendingNotification } from "./tasks/index.js";

// Records and wire types a caller reads.
export {
  Kinds,
  TaskStateSchema,
  type Action,
  type DeliveryTarget,
  type DirectoryEntry,
  type Envelope,
  type Lifecycle,
  type Origin,
  type SessionRecord,
  type TaskRecord,
  type TaskState,
  type TurnOutcome,
  type WatchEvent,
  type WatchRecord,
  type WireAddress,
} from "./wire/index.js";

// Handoff helpers hosts call.
export { originFromHostContext, classifyReply, type HostContext, type ReplyClassification, type LegacyToken, type RouteOverrides } from "./handoff/index.js";

// Tools for models.
export { meshTools, formatMessage, type MeshTool, type ToolContext, type ToolResult } from "./tools/index.js";

// Errors (each has a stable `code`).
export * from "./errors.js";
export { AmbiguousTaskError, TaskNotFoundError, NotAssigneeError, NoDeliveryRouteError } from "./tasks/index.js";
export { DirectGetError } from "./transport/direct-reader.js";
export { InvalidTaskActionError } from "./session/index.js";
export { InvalidChannelAddressError, UnknownChannelError, AmbiguousChannelError } from "./registry/index.js";
export { UnreadableRecordError, StoreContentionError, NotProvisionedError } from "./topology/index.js";
export { StreamRefusedError } from "./transport/ingest.js";
export { SeenLogRefusedError } from "./inbox/seen-log.js";
export { ForbiddenRouteError } from "./handoff/index.js";
export { NatsServerNotFoundError } from "./server/local-server.js";
