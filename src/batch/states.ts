/**
 * The per-serial life cycle, as pure data. The journal enforces it atomically in Redis; this
 * table is the single source of which transitions are legal.
 *
 *   accepted → keyed → registering → registered → flashed → verified
 *   any state short of verified → failed {code, message}
 */
export const STATES = [
  'accepted',
  'keyed',
  'registering',
  'registered',
  'flashed',
  'verified',
  'failed',
] as const;
export type DeviceState = (typeof STATES)[number];

/** to-state -> the states it may be entered from. */
export const ALLOWED_FROM: Record<DeviceState, readonly DeviceState[]> = {
  accepted: ['failed'], // a retry of a failed device starts over from intake
  keyed: ['accepted', 'registering'], // registering -> keyed: a retryable line failure, re-queued
  registering: ['keyed'],
  registered: ['registering'],
  // 'flashed' again: a re-flash of a device that lost its credentials; from 'failed': a station
  // retry of a device whose certificate exists (the station only has a bundle for those).
  flashed: ['registered', 'flashed', 'verified', 'failed'],
  verified: ['flashed'],
  failed: ['accepted', 'keyed', 'registering', 'registered', 'flashed'],
};

export function canTransition(from: DeviceState | undefined, to: DeviceState): boolean {
  return from !== undefined && ALLOWED_FROM[to].includes(from);
}

/** States in which a device still counts as pending (not provisioned, not failed). */
export const PENDING: readonly DeviceState[] = ['accepted', 'keyed', 'registering'];
