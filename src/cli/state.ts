/** Where `clawmesh start` leaves word of the running embedded mesh, for the other commands. */
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { z } from "zod";

export const STATE_DIR = resolve(process.env.CLAWMESH_HOME ?? ".clawmesh");
const STATE_FILE = join(STATE_DIR, "mesh.json");

const RunningSchema = z.object({
  url: z.string(),
  serverPid: z.number(),
  supervisorPid: z.number(),
  storeDir: z.string(),
  version: z.string(),
  instance: z.string(),
  prefix: z.string(),
});
export type Running = z.infer<typeof RunningSchema>;

export function readRunning(): Running | undefined {
  if (!existsSync(STATE_FILE)) return undefined;
  const parsed = RunningSchema.safeParse(JSON.parse(readFileSync(STATE_FILE, "utf8")));
  return parsed.success ? parsed.data : undefined;
}

export function writeRunning(r: Running): void {
  mkdirSync(STATE_DIR, { recursive: true });
  writeFileSync(STATE_FILE, `${JSON.stringify(r, null, 2)}\n`);
}

export function clearRunning(): void {
  rmSync(STATE_FILE, { force: true });
}

export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
