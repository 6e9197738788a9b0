/**
 * Structured logs, quiet by default (warn). Bodies and credentials are never logged at info or
 * above; identifiers (envelope ids, session keys, sequences) are.
 */
import { pino, type Logger } from "pino";

export type { Logger };

export function createLogger(name = "clawmesh"): Logger {
  return pino({
    name,
    level: process.env.CLAWMESH_LOG_LEVEL ?? "warn",
    redact: { paths: ["body", "*.body", "password", "*.password", "token", "*.token", "creds", "*.creds"], censor: "[redacted]" },
  });
}
