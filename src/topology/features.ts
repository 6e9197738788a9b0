/**
 * What the connected nats-server can do, from its version. The mesh runs on 2.9 and adapts where a
 * feature is missing.
 */
const REQUIREMENTS = {
  /** More than one filter subject per consumer. */
  multiFilter: "2.10.0",
  /** Consumer and stream `metadata` maps. */
  metadata: "2.10.0",
  /** `+TERM <reason>` is honoured; before it, a term with a reason is ignored and the message returns. */
  termReason: "2.10.4",
  /**
   * `discard: new` refuses at `max_bytes` exactly. Before 2.10.6 the check ignores each record's
   * subject and header overhead, so a publish is acknowledged and the oldest message evicted
   * (nats-server #4771/#4772, #4775/#4802): a byte cap there is a loss risk.
   */
  exactByteLimit: "2.10.6",
  /** Per-message TTL (`Nats-TTL`); before it the header is accepted and does nothing. */
  messageTtl: "2.11.0",
} as const;

export type ServerFeature = keyof typeof REQUIREMENTS;

export class ServerFeatures {
  readonly version: string;
  private readonly parsed: [number, number, number];

  constructor(version: string) {
    this.version = version;
    this.parsed = parseVersion(version);
  }

  supports(feature: ServerFeature): boolean {
    return compare(this.parsed, parseVersion(REQUIREMENTS[feature])) >= 0;
  }
}

function parseVersion(v: string): [number, number, number] {
  const m = /^v?(\d+)\.(\d+)\.(\d+)/.exec(v);
  if (!m) return [0, 0, 0];
  return [Number(m[1]), Number(m[2]), Number(m[3])];
}

function compare(a: [number, number, number], b: [number, number, number]): number {
  for (let i = 0; i < 3; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return 0;
}
