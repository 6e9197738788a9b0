/** `mesh.parked`: messages this instance's inboxes could not deliver, and putting them back. */
import { dropParked, listParked, redriveParked, showParked, type ParkedDetail, type ParkedMessage } from "../inbox/index.js";
import type { MeshCore, SessionRef } from "./core.js";

export class ParkedClient {
  /** @internal */
  constructor(private readonly core: MeshCore) {}

  /**
   * Parked messages of this instance (optionally of one session), oldest first. `instance` reads
   * another instance's (as far as this connection's permissions allow: the operator's may).
   */
  async list(session?: SessionRef, opts: { readonly instance?: string } = {}): Promise<ParkedMessage[]> {
    return listParked(this.core.ctx, opts.instance ?? this.core.instance, session === undefined ? undefined : this.core.address(session));
  }

  /** Put a parked message back into its session inbox (of this instance, or `instance`'s). */
  async redrive(parkedSeq: number, opts: { readonly instance?: string } = {}): Promise<{ subject: string; seq: number }> {
    return redriveParked(this.core.ctx, opts.instance ?? this.core.instance, parkedSeq);
  }

  /** One parked message: its headers and its body as text. */
  async show(parkedSeq: number): Promise<ParkedDetail> {
    return showParked(this.core.ctx, this.core.instance, parkedSeq);
  }

  /** Delete a parked message for good. */
  async drop(parkedSeq: number): Promise<void> {
    await dropParked(this.core.ctx, this.core.instance, parkedSeq);
  }
}
