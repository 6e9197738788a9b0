/**
 * One auth story for the library, the CLI and the OpenClaw plugin: the credentials an instance
 * connects with, validated by one zod schema, turned into NATS connection options in one place.
 * Every form the generated server configuration can ask for is accepted: user/password, token,
 * nkey seed, creds file, TLS (CA, certificate, key). The inbox prefix defaults to
 * `_INBOX_<instance>`, the only reply prefix the generated permissions let an instance use.
 * Secrets never appear in logs or error texts: only which kind of credential was used.
 */
import { readFileSync } from "node:fs";
import { credsAuthenticator, nkeyAuthenticator, tokenAuthenticator, usernamePasswordAuthenticator, type Authenticator, type ConnectionOptions } from "@nats-io/transport-node";
import { z } from "zod";
import { ValidationError } from "../errors.js";

export const MeshAuthSchema = z
  .object({
    user: z.string().min(1).optional().describe("NATS user (with password)"),
    password: z.string().min(1).optional().describe("NATS password (with user)"),
    token: z.string().min(1).optional().describe("NATS token"),
    nkeySeedFile: z.string().min(1).optional().describe("File holding the instance's nkey seed (SU...)"),
    credsFile: z.string().min(1).optional().describe("NATS credentials file (JWT + seed)"),
    tls: z
      .object({
        caFile: z.string().min(1).optional().describe("CA certificate that signed the server's certificate"),
        certFile: z.string().min(1).optional().describe("Client certificate"),
        keyFile: z.string().min(1).optional().describe("Client key"),
      })
      .strict()
      .optional()
      .describe("TLS to the server (an empty object requires TLS with the system CAs)"),
    inboxPrefix: z
      .string()
      .regex(/^[A-Za-z0-9_-]+$/)
      .optional()
      .describe("Reply-subject prefix (default _INBOX_<instance>, what the generated permissions allow)"),
  })
  .strict()
  .refine((a) => (a.user === undefined) === (a.password === undefined), { message: "user and password go together", path: ["password"] })
  .refine((a) => [a.user, a.token, a.nkeySeedFile, a.credsFile].filter((x) => x !== undefined).length <= 1, { message: "give one of user/password, token, nkeySeedFile or credsFile", path: ["user"] });

export type MeshAuth = z.input<typeof MeshAuthSchema>;

/** The reply prefix an instance uses unless told otherwise. */
export function defaultInboxPrefix(instance: string): string {
  return `_INBOX_${instance}`;
}

/** What kind of credential `auth` holds (for logs: never the secret itself). */
export function describeAuth(auth: MeshAuth | undefined): string {
  if (!auth) return "no credentials";
  if (auth.user) return `user ${auth.user}`;
  if (auth.token) return "a token";
  if (auth.nkeySeedFile) return "an nkey";
  if (auth.credsFile) return "a creds file";
  return "no credentials";
}

function readFile(path: string, what: string): Uint8Array {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new ValidationError("credentials", [{ path: what, message: `cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? "unreadable"}` }]);
  }
}

/** NATS connection options for `auth` (validated); the inbox prefix defaults to the instance's. */
export function connectionOptionsFor(authInput: MeshAuth | undefined, instance: string): Pick<ConnectionOptions, "authenticator" | "tls" | "inboxPrefix"> {
  const parsed = MeshAuthSchema.safeParse(authInput ?? {});
  if (!parsed.success) {
    throw new ValidationError(
      "credentials",
      parsed.error.issues.map((i) => ({ path: i.path.map(String).join("."), message: i.message })),
    );
  }
  const auth = parsed.data;
  let authenticator: Authenticator | undefined;
  if (auth.user !== undefined) authenticator = usernamePasswordAuthenticator(auth.user, auth.password);
  else if (auth.token !== undefined) authenticator = tokenAuthenticator(auth.token);
  else if (auth.nkeySeedFile !== undefined) authenticator = nkeyAuthenticator(new TextEncoder().encode(new TextDecoder().decode(readFile(auth.nkeySeedFile, "nkeySeedFile")).trim()));
  else if (auth.credsFile !== undefined) authenticator = credsAuthenticator(readFile(auth.credsFile, "credsFile"));
  return {
    ...(authenticator && { authenticator }),
    ...(auth.tls && { tls: { ...auth.tls } }),
    inboxPrefix: auth.inboxPrefix ?? defaultInboxPrefix(instance),
  };
}
