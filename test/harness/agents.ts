/** Scripted agents (no LLM): sessions that take their inbox and answer task requests by script. */
import { Kinds, TaskRequestBodySchema } from "../../src/wire/index.js";
import type { Mesh } from "../../src/index.js";
import type { FinishOutcome } from "../../src/tasks/index.js";
import type { JsonBody, MeshSession } from "../../src/session/index.js";

export { Latch } from "../../src/testing/index.js";

export type TaskScript = (req: { taskId: string; message: string }, session: MeshSession) => Promise<{ state: "completed" | "failed"; result?: JsonBody; error?: string }>;

export interface ScriptedAgent {
  /** Resolves with the outcome of each task this agent finished, in order, as they happen. */
  readonly finished: FinishOutcome[];
  nextFinish(): Promise<FinishOutcome>;
  stop(): Promise<void>;
}

export async function scriptedAgent(mesh: Mesh, sessionKey: string, script: TaskScript): Promise<ScriptedAgent> {
  const session = await mesh.sessions.open(sessionKey);
  const stopper = new AbortController();
  const finished: FinishOutcome[] = [];
  const waiters: ((o: FinishOutcome) => void)[] = [];
  let seen = 0;
  const loop = (async () => {
    while (!stopper.signal.aborted) {
      const arrival = session.nextArrival(stopper.signal);
      const batch = await session.take();
      if (batch.messages.length === 0) {
        await arrival;
        continue;
      }
      await batch.confirm();
      for (const m of batch.messages) {
        if (m.kind !== Kinds.taskRequest) continue;
        const req = TaskRequestBodySchema.parse(m.body);
        const out = await script(req, session);
        const outcome = await session.complete({ taskId: req.taskId, ...out });
        finished.push(outcome);
        waiters.shift()?.(outcome);
      }
    }
  })();
  return {
    finished,
    nextFinish: () => {
      const ready = finished[seen];
      if (ready) {
        seen++;
        return Promise.resolve(ready);
      }
      return new Promise((resolve) => {
        waiters.push(resolve);
        seen++;
      });
    },
    async stop() {
      stopper.abort();
      await loop.catch(() => undefined);
      await session.close();
    },
  };
}
