/** A chunk's step forward, conditional on where it stands (chunk-1.lua through the journal). */
import type { BatchPlan } from '../../batch/index.js';
import type { Chunk, ChunkState } from '../journal.js';
import type { RegistrarDeps } from './deps.js';

/**
 * Writes the chunk's next state and its fields, only while the chunk is in one of `from` (and
 * carries `fence`, when given). False when the chunk has moved on without this registrar: the
 * caller leaves it, and the batch loop takes it up again from what the journal says.
 */
export async function moveChunk(
  deps: Pick<RegistrarDeps, 'journal' | 'log'>,
  plan: BatchPlan,
  c: Chunk,
  fields: Record<string, string> & { state: ChunkState },
  expect: { from: readonly ChunkState[]; fence?: number },
): Promise<boolean> {
  const r = await deps.journal.setChunk(plan.batchId, c.n, fields, expect);
  if (r.status === 'ok') return true;
  deps.log?.warn(
    { batchId: plan.batchId, chunk: c.n, to: fields.state, expected: expect, found: r },
    'the chunk has moved on without this registrar; leaving it',
  );
  return false;
}
