/**
 * One claim device's visit (strategy claim), after lookup and decide:
 *
 *   [unwrap the claim key in the HSM, plain delivery] → verify first → write the root CA, the
 *   claim certificate and key and the fleet settings (read back) → record flashed, verified
 *   → PROVISION: the device provisions itself over MQTT through the hook and connects as its
 *   new thing → record connected (with its certificate), or failed with the device's report
 *
 * The claim key in plaintext (plain delivery) lives in one Buffer, zeroed as soon as the write
 * and read-back are over. The device's own key never leaves the device.
 */
import { mqttAddress } from '../../batch/index.js';
import { ProvlineError } from '../../core/index.js';
import {
  canProvisionByClaim,
  type ClaimCredentials,
  type DeviceDriver,
  type WriteResult,
} from '../drivers/index.js';
import type { StationStep } from './events.js';
import type { ClaimLookup } from './lookup.js';

export interface ClaimVisitHooks {
  step(step: StationStep): void;
  progress(p: { object: string; bytesSent: number; bytesTotal: number }): void;
  /** Records a state; the visit's failures from `connectStage()` on belong to the connect. */
  record(to: 'flashed' | 'verified' | 'connected', fields: Record<string, string>): Promise<unknown>;
  connectStage(): void;
  /** The HSM (plain delivery): `Hsm.unwrapToPkcs8`, as visit.ts's KeyUnwrapper. */
  keys?: () => Promise<{
    unwrapToPkcs8(req: {
      wrappedKey: string;
      kekLabel: string;
      keyType: ClaimLookup['keyType'];
    }): Promise<Buffer>;
  }>;
  clock(): number;
  signal: AbortSignal;
}

export interface ClaimVisitResult {
  written: WriteResult | undefined;
  flashMs: number;
  verifyMs: number;
  connect: { ms: number; attempts: number; endpoint: string; thingName: string; certificateId: string };
}

export async function claimVisit(
  driver: DeviceDriver,
  l: ClaimLookup,
  h: ClaimVisitHooks,
): Promise<ClaimVisitResult> {
  if (!canProvisionByClaim(driver))
    throw new ProvlineError(
      'DRIVER_UNSUPPORTED',
      `the ${driver.name} driver cannot provision devices by claim`,
      {
        retryable: false,
        hint: 'the claim strategy needs provline-serial-v1 firmware with the FLEET capability',
      },
    );
  const address = mqttAddress(l.endpoint);
  if (!address)
    throw new ProvlineError(
      'STATION_BUNDLE_INCOMPLETE',
      `claim batch ${l.batchId} names no MQTT endpoint ("${l.endpoint}")`,
      {
        hint: 're-publish the lot: `provline claim publish <batch>`',
      },
    );
  const creds: ClaimCredentials = {
    rootCaPem: l.rootCaPem,
    claimCertificatePem: l.claim.claimCertificatePem,
    fleet: {
      templateName: l.claim.templateName,
      // The device's parameters: its serial and its lot (the hook sets the rest from the lot's row).
      parameters: {
        [l.claim.serialParameter]: l.serial,
        ...(l.claim.lotParameter ? { [l.claim.lotParameter]: l.batchId } : {}),
      },
      deviceKey: l.claim.deviceKey,
    },
  };
  let key: Buffer | undefined;
  let written: WriteResult | undefined;
  const t0 = h.clock();
  try {
    if (l.keyDelivery === 'plain') {
      h.step('unwrap');
      if (!h.keys)
        throw new ProvlineError('STATION_NO_HSM', 'plain key delivery needs the HSM, and none is set up');
      key = await (
        await h.keys()
      ).unwrapToPkcs8({
        wrappedKey: l.claim.claimWrappedKey,
        kekLabel: l.claim.kekLabel,
        keyType: l.keyType,
      });
      creds.claimPrivateKeyPem = `-----BEGIN PRIVATE KEY-----\n${key
        .toString('base64')
        .replace(/.{64}/g, '$&\n')
        .trimEnd()}\n-----END PRIVATE KEY-----\n`;
    } else creds.claimWrappedKey = l.claim.claimWrappedKey;
    h.step('verify');
    const before = await driver.verifyClaim({ ...creds, signal: h.signal });
    if (!before.ok) {
      h.step('write');
      written = await driver.writeClaim({ ...creds, signal: h.signal, onProgress: (p) => h.progress(p) });
    }
  } finally {
    key?.fill(0);
    delete creds.claimPrivateKeyPem;
  }
  const flashMs = Math.round(h.clock() - t0);
  await h.record('flashed', {
    flashMs: String(flashMs),
    bytes: String(written?.bytesWritten ?? 0),
    passes: String(written?.passes ?? 0),
    rewritten: written ? '1' : '0',
    claimCertificateId: l.claim.claimCertificateId,
  });
  await h.record('verified', { verifyMs: '0', verifiedBy: 'read-back' });
  h.connectStage();
  h.step('connect');
  const t1 = h.clock();
  const r = await driver.provision({ ...address, clientId: l.thingName, signal: h.signal });
  const endpoint = `${address.host}:${address.port}`;
  const connect = {
    ms: Math.round(h.clock() - t1),
    attempts: r.attempts.length,
    endpoint,
    thingName: r.thingName,
    certificateId: r.certificateId,
  };
  await h.record('connected', {
    connectMs: String(connect.ms),
    connectAttempts: String(connect.attempts),
    endpoint,
    clientId: r.thingName,
    certificateId: r.certificateId,
    provisionedThing: r.thingName,
  });
  return { written, flashMs, verifyMs: 0, connect };
}
