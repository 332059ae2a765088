/**
 * What became of each serial of a claim lot (pure), from the hook's records: provisioned (the
 * hook allowed it, once), denied (every refusal, the last reason shown), or not seen yet; and
 * the things that look like this product's but no lot allowed.
 */
import type { AllowList } from '../hook/allow-list.js';
import type { HookRecords } from './aws.js';

export type ClaimOutcome = 'provisioned' | 'denied' | 'not seen';

export interface SerialOutcome {
  claim: ClaimOutcome;
  /** For denied: `<code>: <reason>` of the latest denial (and how many there were). */
  reason: string;
  certificateId?: string;
  at?: string;
}

/**
 * `clientId`: the client id the serial's device connects with (its thing name). A device that
 * presented another serial than its own is denied under that other serial; its denials are
 * found by the client id and reported as the serial's, saying which serial it presented.
 */
export function serialOutcome(records: HookRecords, serial: string, clientId?: string): SerialOutcome {
  const used = records.used.get(serial);
  if (used) return { claim: 'provisioned', reason: '', certificateId: used.certificateId, at: used.at };
  const own = records.denied.get(serial) ?? [];
  const presented =
    own.length || !clientId ? [] : [...records.denied.values()].flat().filter((d) => d.clientId === clientId);
  const denials = own.length ? own : presented;
  if (denials.length) {
    const last = [...denials].sort((a, b) => (a.at < b.at ? 1 : -1))[0]!;
    const as = own.length
      ? ''
      : ` (its device, client id ${clientId}, presented serial ${JSON.stringify(last.serial)})`;
    return {
      claim: 'denied',
      reason: `${last.code}: ${last.reason}${as}${denials.length > 1 ? ` (${denials.length} denials)` : ''}`,
      at: last.at,
    };
  }
  return { claim: 'not seen', reason: '' };
}

/** Things named like the product's (`prefix…`) that no published lot lists. */
export function outsideAllowList(thingNames: readonly string[], lots: readonly AllowList[]): string[] {
  const allowed = new Set(lots.flatMap((l) => Object.values(l.devices).map((d) => d.thingName)));
  return thingNames.filter((t) => !allowed.has(t)).sort();
}
