/** clawmesh public API. Internals (topology, inbox plumbing) are not part of it. */
export { Mesh, type MeshConnectOptions, type SendInput, type SendResult, type SessionRef } from "./mesh.js";
export { Inbox, type InboxBatch, type InboxMessage, type InboxOptions, type TakeOptions, type ParkedMessage } from "./inbox/index.js";
export { parseSessionKey, sessionKeyOf, originalKeyOf, describeAddress, type SessionAddress } from "./address/index.js";
export { EnvelopeSchema, AddressSchema, Kinds, decodeEnvelope, encodeEnvelope, type Envelope } from "./wire/index.js";
export { MeshConfigSchema, type MeshConfig, type MeshConfigInput } from "./config.js";
export * from "./errors.js";
export { MeshSession, childTaskId, type SendOutcome, type DelegateOutcome, type JsonBody } from "./session/index.js";
export { type AwaitResult, type FinishedItem, type PendingItem, type FinishOutcome, TaskNotFoundError, NotAssigneeError } from "./tasks/index.js";
export { meshTools, meshSend, meshDelegate, meshComplete, meshAwait, meshInbox, formatMessage, type MeshTool, type ToolContext, type ToolResult } from "./tools/index.js";
export { Kinds as MessageKinds, TaskStateSchema, type TaskState, type TaskRecord } from "./wire/index.js";
