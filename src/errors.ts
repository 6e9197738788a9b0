/**
 * Every error the mesh raises on purpose is a MeshError with a stable `code`, so callers (and the
 * tool adapter) can branch on the kind of failure without parsing messages.
 */
export class MeshError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** A session key, instance id or address part that cannot name a session. */
export class InvalidAddressError extends MeshError {
  readonly input: string;
  constructor(input: string, reason: string) {
    super("invalid_address", `invalid session address ${JSON.stringify(truncate(input))}: ${reason}`);
    this.input = input;
  }
}

/** An encoded envelope bigger than the mesh accepts; nothing was published. */
export class PayloadTooLargeError extends MeshError {
  readonly size: number;
  readonly limit: number;
  constructor(size: number, limit: number, serverMaxPayload: number | undefined) {
    const server = serverMaxPayload === undefined ? "" : ` (server max_payload is ${serverMaxPayload} bytes)`;
    super(
      "payload_too_large",
      `message is ${size} bytes encoded; the mesh limit is ${limit} bytes${server}. Nothing was sent: shorten the body or send a reference to it.`,
    );
    this.size = size;
    this.limit = limit;
  }
}

/** Invalid input at the API edge (zod issues flattened into one readable sentence). */
export class ValidationError extends MeshError {
  readonly issues: readonly { path: string; message: string }[];
  constructor(what: string, issues: readonly { path: string; message: string }[]) {
    const list = issues.map((i) => (i.path ? `${i.path}: ${i.message}` : i.message)).join("; ");
    super("invalid_input", `invalid ${what}: ${list}`);
    this.issues = issues;
  }
}

/** An existing stream, consumer or bucket whose configuration disagrees with what the mesh needs. */
export class TopologyConflictError extends MeshError {
  readonly resource: string;
  readonly field: string;
  constructor(resource: string, field: string, actual: unknown, wanted: unknown) {
    super(
      "topology_conflict",
      `${resource} exists with ${field}=${JSON.stringify(actual)} but the mesh is configured for ${field}=${JSON.stringify(wanted)}; ` +
        `change the mesh configuration to match, or update/recreate ${resource} deliberately`,
    );
    this.resource = resource;
    this.field = field;
  }
}

/** The recipient instance has no inbox stream: it was never provisioned. */
export class UnknownInstanceError extends MeshError {
  readonly instance: string;
  constructor(instance: string) {
    super(
      "unknown_instance",
      `instance '${instance}' has no inbox stream on this mesh; start that instance once or provision it (clawmesh provision ${instance})`,
    );
    this.instance = instance;
  }
}

/** A publish that the server did not acknowledge. The envelope id is kept so a retry is deduplicated. */
export class SendFailedError extends MeshError {
  readonly envelopeId: string;
  constructor(envelopeId: string, cause: unknown) {
    super(
      "send_failed",
      `message ${envelopeId} was not acknowledged by the server (${describe(cause)}); it may or may not be stored: retry with the same id`,
      { cause },
    );
    this.envelopeId = envelopeId;
  }
}

/**
 * The recipient session is closed for good (registry lifecycle `closed`): it takes no more
 * messages or tasks. Raised before anything is written: nothing was sent or stored.
 */
export class SessionClosedError extends MeshError {
  readonly sessionKey: string;
  readonly instance: string;
  constructor(sessionKey: string, instance: string) {
    super("session_closed", `session ${sessionKey} @${instance} was closed and takes no more messages or tasks; nothing was sent. Start a new session for this work instead`);
    this.sessionKey = sessionKey;
    this.instance = instance;
  }
}

/** Another reader holds the session's lease and did not release it in time. */
export class SessionBusyError extends MeshError {
  constructor(sessionKey: string, holder: string) {
    super("session_busy", `session ${sessionKey} is being read by ${holder}; try again when that run ends`);
  }
}

/** This reader's lease was taken over (it stalled past its lease); it must stop reading. */
export class LeaseLostError extends MeshError {
  constructor(sessionKey: string) {
    super("lease_lost", `this reader no longer holds the lease on ${sessionKey}; nothing was confirmed`);
  }
}

/** Misuse of the inbox API, e.g. taking again before confirming the previous batch. */
export class InboxStateError extends MeshError {
  constructor(message: string) {
    super("inbox_state", message);
  }
}

export function describe(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}

function truncate(s: string): string {
  return s.length > 200 ? `${s.slice(0, 200)}…` : s;
}
