/** Records the mesh stores for itself (not envelopes): the surfaced-id log. */
import { z } from "zod";

/**
 * One confirmed surfacing: the envelope ids the model was shown, and the highest inbox stream
 * sequence whose handling is complete (shown, skipped as already shown, or parked).
 */
export const SeenRecordSchema = z.object({
  v: z.literal(1),
  ids: z.array(z.string()),
  through: z.number().int().nonnegative().optional(),
  at: z.iso.datetime(),
});
export type SeenRecord = z.infer<typeof SeenRecordSchema>;
