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

export function serialOutcome(records: HookRecords, serial: string): SerialOutcome {
  const used = records.used.get(serial);
  if (used) return { claim: 'provisioned', reason: '', certificateId: used.certificateId, at: used.at };
  const denials = records.denied.get(serial);
  if (denials?.length) {
    const last = [...denials].sort((a, b) => (a.at < b.at ? 1 : -1))[0]!;
    return {
      claim: 'denied',
      reason: `${last.code}: ${last.reason}${denials.length > 1 ? ` (${denials.length} denials)` : ''}`,
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
