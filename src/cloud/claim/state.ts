/**
 * A profile's claim over time (pure): the current claim certificate, and the ones before it.
 * `rotate` makes a new current claim and keeps the old one ACTIVE until its grace period ends;
 * `revoke` turns a claim off at once. Nothing here holds a private key in plaintext: the claim
 * key is kept wrapped under the profile's transport KEK, as device keys are.
 */
import type { KeyType } from '../../config/index.js';

export type ClaimStatus = 'ACTIVE' | 'RETIRING' | 'INACTIVE' | 'REVOKED';

export interface ClaimCredential {
  certificateId: string;
  certificateArn: string;
  certificatePem: string;
  /** base64 RFC 5649 blob of the claim key under the KEK `kekLabel`. */
  wrappedKey: string;
  kekId: string;
  kekLabel: string;
  keyType: KeyType;
  policyName: string;
  createdAt: string;
  status: ClaimStatus;
  /** RETIRING: when `claim rotate` (or `claim status`) deactivates it. */
  deactivateAt?: string;
  revokedAt?: string;
  reason?: string;
}

export interface ClaimState {
  version: 1;
  profile: string;
  templateName: string;
  /** The parameter the devices send their serial in, and how they get their own key. */
  serialParameter: string;
  /** The parameter the devices send their lot in (absent in states made before lots were checked). */
  lotParameter?: string;
  deviceKey: 'csr' | 'keys';
  /** The allow-list signing key's public key (what the hook must trust). */
  signingPublicKeyPem: string;
  current?: ClaimCredential;
  previous: ClaimCredential[];
}

/** The new state after a rotation to `next`: the old current retires after `graceHours`. */
export function rotated(state: ClaimState, next: ClaimCredential, now: Date, graceHours: number): ClaimState {
  const old = state.current;
  const previous = [...state.previous];
  if (old)
    previous.unshift({
      ...old,
      status: graceHours > 0 ? 'RETIRING' : 'INACTIVE',
      deactivateAt: new Date(now.getTime() + graceHours * 3_600_000).toISOString(),
    });
  return { ...state, current: next, previous };
}

/** The new state after revoking the current claim: no current claim until the next rotation. */
export function revoked(state: ClaimState, now: Date, reason: string): ClaimState {
  if (!state.current) return state;
  return {
    ...state,
    current: undefined,
    previous: [
      { ...state.current, status: 'REVOKED', revokedAt: now.toISOString(), reason },
      ...state.previous,
    ],
  };
}

/** The retiring claims whose grace period is over at `now`. */
export function dueForDeactivation(state: ClaimState, now: Date): ClaimCredential[] {
  return state.previous.filter(
    (c) =>
      c.status === 'RETIRING' && c.deactivateAt !== undefined && Date.parse(c.deactivateAt) <= now.getTime(),
  );
}

/** `state` with these certificates marked INACTIVE. */
export function deactivated(state: ClaimState, ids: ReadonlySet<string>): ClaimState {
  return {
    ...state,
    previous: state.previous.map((c) => (ids.has(c.certificateId) ? { ...c, status: 'INACTIVE' } : c)),
  };
}

/** Every claim certificate id the profile ever had (to tell claim-made things apart). */
export function claimIds(state: ClaimState): string[] {
  return [state.current, ...state.previous].filter((c) => c !== undefined).map((c) => c.certificateId);
}
