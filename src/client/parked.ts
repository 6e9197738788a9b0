/** `mesh.parked`: messages this instance's inboxes could not deliver, and putting them back. */
import { listParked, redriveParked, type ParkedMessage } from "../inbox/index.js";
import type { MeshCore, SessionRef } from "./core.js";

export class ParkedClient {
  /** @internal */
  constructor(private readonly core: MeshCore) {}

  /** Parked messages of this instance (optionally of one session), oldest first. */
  async list(session?: SessionRef): Promise<ParkedMessage[]> {
    return listParked(this.core.ctx, this.core.instance, session === undefined ? undefined : this.core.address(session));
  }

  /** Put a parked message back into its session inbox. */
  async redrive(parkedSeq: number): Promise<{ subject: string; seq: number }> {
    return redriveParked(this.core.ctx, this.core.instance, parkedSeq);
  }
}
