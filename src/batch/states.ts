/**
 * The per-serial life cycle, as pure data. The journal enforces it atomically in Redis; this
 * table is the single source of which transitions are legal.
 *
 *   accepted → keyed → registering → registered → flashed → verified → connected
 *   accepted → signed → flashed → verified → connected    (factory CA: jitp, jitr)
 *   any state short of verified → failed {code, message}
 *   verified → failed: the device's first MQTT connect failed (a station check)
 *
 * `signed`: the HSM made the device key and the profile's factory CA signed its certificate,
 * offline: AWS has not seen it yet and provisions it at the device's first connect.
 *
 * `connected`: the device connected to the MQTT endpoint as its thing with the credentials it
 * was given (its own answer: CONNACK 0). Nothing moves a connected device back except a
 * re-flash.
 */
export const STATES = [
  'accepted',
  'keyed',
  'registering',
  'registered',
  'signed',
  'flashed',
  'verified',
  'connected',
  'failed',
] as const;
export type DeviceState = (typeof STATES)[number];

/** to-state -> the states it may be entered from. */
export const ALLOWED_FROM: Record<DeviceState, readonly DeviceState[]> = {
  accepted: ['failed'], // a retry of a failed device starts over from intake
  keyed: ['accepted', 'registering'], // registering -> keyed: a retryable line failure, re-queued
  registering: ['keyed'],
  registered: ['registering'],
  signed: ['accepted'],
  // 'flashed' again: a re-flash of a device that lost its credentials; from 'failed': a station
  // retry of a device whose certificate exists (the station only has a bundle for those).
  // From 'accepted': a claim device, written its claim at the station (strategy claim).
  flashed: ['registered', 'signed', 'flashed', 'verified', 'connected', 'failed', 'accepted'],
  verified: ['flashed'],
  connected: ['verified'],
  // from 'verified': its first connect failed (retried on its next visit, failed → flashed).
  failed: ['accepted', 'keyed', 'registering', 'registered', 'signed', 'flashed', 'verified'],
};

export function canTransition(from: DeviceState | undefined, to: DeviceState): boolean {
  return from !== undefined && ALLOWED_FROM[to].includes(from);
}

/** States in which a device still counts as pending (not provisioned, not failed). */
export const PENDING: readonly DeviceState[] = ['accepted', 'keyed', 'registering'];
