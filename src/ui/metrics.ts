/** Prometheus text exposition (format 0.0.4) of the operator's view, and the pingback histogram. */

/** Buckets of the pingback latency histogram, in seconds. */
export const PINGBACK_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300] as const;

/** A cumulative histogram of observed values (seconds). */
export class Histogram {
  private readonly counts = PINGBACK_BUCKETS.map(() => 0);
  private count = 0;
  private sum = 0;

  observe(seconds: number): void {
    const v = Math.max(0, seconds);
    this.count++;
    this.sum += v;
    PINGBACK_BUCKETS.forEach((le, i) => {
      if (v <= le) this.counts[i]!++;
    });
  }

  lines(name: string): string[] {
    return [
      ...PINGBACK_BUCKETS.map((le, i) => `${name}_bucket{le="${le}"} ${this.counts[i]}`),
      `${name}_bucket{le="+Inf"} ${this.count}`,
      `${name}_sum ${this.sum}`,
      `${name}_count ${this.count}`,
    ];
  }
}

export interface MetricsInput {
  readonly instances: readonly { readonly instance: string; readonly pending: number; readonly oldestPendingAgeSeconds: number; readonly parked: number }[];
  readonly tasksByState: Readonly<Record<string, number>>;
  readonly notificationsPending: number;
  readonly pingback: Histogram;
}

const label = (v: string) => v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");

function gauge(name: string, help: string, samples: readonly [labels: string, value: number][]): string[] {
  return [`# HELP ${name} ${help}`, `# TYPE ${name} gauge`, ...samples.map(([l, v]) => `${name}${l} ${v}`)];
}

export function renderMetrics(m: MetricsInput): string {
  const per = (f: (i: MetricsInput["instances"][number]) => number) => m.instances.map((i) => [`{instance="${label(i.instance)}"}`, f(i)] as [string, number]);
  return [
    ...gauge("clawmesh_pending_messages", "Messages stored in an instance's inboxes and not yet surfaced.", per((i) => i.pending)),
    ...gauge("clawmesh_oldest_pending_age_seconds", "Age of the oldest pending message of an instance (0 when none).", per((i) => i.oldestPendingAgeSeconds)),
    ...gauge("clawmesh_parked_messages", "Messages parked (undeliverable) per instance.", per((i) => i.parked)),
    ...gauge("clawmesh_tasks", "Tasks in the registry by state.", Object.entries(m.tasksByState).map(([s, n]) => [`{state="${label(s)}"}`, n] as [string, number])),
    ...gauge("clawmesh_notifications_pending", "Decided tasks whose completion this process could not deliver yet.", [["", m.notificationsPending]]),
    "# HELP clawmesh_pingback_latency_seconds Time from a task.complete envelope's sentAt to this process seeing it on the inbox tail.",
    "# TYPE clawmesh_pingback_latency_seconds histogram",
    ...m.pingback.lines("clawmesh_pingback_latency_seconds"),
    "",
  ].join("\n");
}
