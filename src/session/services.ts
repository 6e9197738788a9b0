/** The shared registries a session run (and the mesh) works with. */
import type { Directory, SessionRegistry, Watches } from "../registry/index.js";
import type { DeferredNotifications, TaskRegistry } from "../tasks/index.js";
import type { KvStore } from "../topology/index.js";
import type { TaskKeyEntrySchema } from "../wire/index.js";

export interface MeshServices {
  readonly tasks: TaskRegistry;
  readonly sessions: SessionRegistry;
  readonly directory: Directory;
  readonly watches: Watches;
  readonly taskKeys: KvStore<typeof TaskKeyEntrySchema>;
  /** Where decided tasks whose completion could not be delivered yet are retried (the Mesh's notifier). */
  readonly notifier: DeferredNotifications;
}
