/**
 * One device visit at one port, from the identity the device reported to a recorded result:
 *
 *   lookup → decide → [keygen → register] → [unwrap] → verify first → write (read-back inside)
 *   → record flashed → prove possession (where the driver can) → record verified
 *   → first connect (where the driver can and the profile wants it) → record connected
 *
 * A device is touched only once `decide` says so; refusals leave it untouched. `verified` is
 * recorded only after the device's own read-back matched and, where the driver has it, its
 * proof of possession checked out. A plaintext key (plain delivery) lives in one Buffer that is
 * zeroed as soon as the write and read-back are over; it is never logged or stored.
 */
import { mqttAddress } from '../../batch/index.js';
import type { KeyType } from '../../config/index.js';
import { ProvlineError, isProvlineError, messageOf } from '../../core/index.js';
import {
  canConnect,
  canGenerateKey,
  canProvePossession,
  type Credentials,
  type DeviceDriver,
  type WriteResult,
} from '../drivers/index.js';
import type { DeviceResult, Outcome, RecordedIn, StationEvent, StationStep } from './events.js';
import { claimVisit } from './claim-visit.js';
import { decide, type BundleLookup, type StationIdentity } from './lookup.js';
import { CONNECT_STAGE, RESULT_VERSION, type ResultEntry } from './results.js';
import type { StationStore } from './store.js';

/** The HSM as the station needs it (plain delivery): `Hsm.unwrapToPkcs8`. */
export interface KeyUnwrapper {
  unwrapToPkcs8(req: { wrappedKey: string; kekLabel: string; keyType: KeyType }): Promise<Buffer>;
}

export interface VisitContext {
  stationId: string;
  port: string;
  station: Omit<StationIdentity, 'canRegister'>;
  /** The profile's `station.firstConnect`: undefined = whenever the driver can. */
  firstConnect?: boolean;
  store: StationStore;
  /** Opens the HSM on first use (only plain delivery needs it). */
  keys?: () => Promise<KeyUnwrapper>;
  /** A driver over this port's link with the batch's driver settings. */
  makeDriver(settings: Record<string, string | number | boolean>): DeviceDriver;
  emit(e: StationEvent): void;
  /** Abandons the visit (SIGTERM after the grace period). */
  signal: AbortSignal;
  /** Monotonic ms, for durations. */
  clock(): number;
  /** Epoch ms, for results. */
  now(): number;
  newId(): string;
  nonce(): Buffer;
}

export async function visitDevice(
  ctx: VisitContext,
  serial: string,
  startedAt: number,
): Promise<DeviceResult> {
  const v = new Visit(ctx, serial, startedAt);
  return v.run();
}

class Visit {
  private batchId: string | undefined;
  private flashMs: number | undefined;
  private verifyMs: number | undefined;
  private bytes: number | undefined;
  private connect: { ms: number; attempts: number; endpoint: string } | undefined;
  /** Where a failure happened, for the journal: `flash`, or `connect` for the first connect. */
  private stage = 'flash';
  /** Set once the device has a certificate (or its claim): failures from then on are journalled. */
  private bundle: Pick<BundleLookup, 'batchId'> | undefined;
  private readonly attempt: string;

  constructor(
    private readonly ctx: VisitContext,
    private readonly serial: string,
    private readonly startedAt: number,
  ) {
    this.attempt = ctx.newId();
  }

  async run(): Promise<DeviceResult> {
    const { ctx } = this;
    this.step('lookup');
    let decision;
    try {
      const lookup = await ctx.store.lookup(this.serial);
      if (lookup.kind !== 'unknown') this.batchId = lookup.batchId;
      decision = decide(lookup, { ...ctx.station, canRegister: ctx.store.canRegister() });
    } catch (e) {
      return this.result('refused', 'none', asError(e));
    }
    if (decision.action === 'refuse') return this.result('refused', 'none', decision.error);

    const settings =
      decision.action === 'write' ? decision.lookup.bundle.driverSettings : decision.lookup.driverSettings;
    let driver: DeviceDriver | undefined;
    try {
      driver = ctx.makeDriver(settings);
      if (decision.action === 'claim') {
        this.bundle = decision.lookup;
        return await this.claim(driver, decision.lookup);
      }
      let bundle: BundleLookup;
      if (decision.action === 'register') {
        const { lookup } = decision;
        let csrPem = lookup.csrPem;
        if (csrPem === undefined) {
          if (!canGenerateKey(driver))
            throw new ProvlineError('DRIVER_UNSUPPORTED', `the ${driver.name} driver cannot generate keys`);
          this.step('keygen');
          csrPem = (await driver.generateKey({ subject: lookup.subject, signal: ctx.signal })).csrPem;
        }
        this.step('register');
        bundle = await ctx.store.register({ lookup, csrPem, signal: ctx.signal });
      } else bundle = decision.lookup;
      this.bundle = bundle;
      return await this.provision(driver, bundle);
    } catch (e) {
      return this.failed(asError(e));
    } finally {
      await driver?.close();
    }
  }

  private async provision(driver: DeviceDriver, bl: BundleLookup): Promise<DeviceResult> {
    const { ctx } = this;
    const b = bl.bundle;
    const creds: Credentials = { rootCaPem: b.rootCaPem, certificatePem: b.certificatePem };
    let key: Buffer | undefined;
    let write: WriteResult | undefined;
    const t0 = ctx.clock();
    try {
      if (b.keyDelivery === 'wrapped') creds.wrappedKey = b.wrappedKey;
      if (b.keyDelivery === 'plain') {
        this.step('unwrap');
        if (!ctx.keys)
          throw new ProvlineError('STATION_NO_HSM', 'plain key delivery needs the HSM, and none is set up');
        const hsm = await ctx.keys();
        key = await hsm.unwrapToPkcs8({
          wrappedKey: b.wrappedKey ?? '',
          kekLabel: bl.kekLabel,
          keyType: b.keyType,
        });
        creds.privateKeyPem = pkcs8Pem(key);
      }
      this.step('verify');
      const before = await driver.verify({ ...creds, signal: ctx.signal });
      if (!before.ok) {
        this.step('write');
        write = await driver.writeCredentials({
          ...creds,
          signal: ctx.signal,
          onProgress: (p) => ctx.emit({ event: 'progress', port: ctx.port, serial: this.serial, ...p }),
        });
        this.bytes = write.bytesWritten;
      }
    } finally {
      key?.fill(0);
      delete creds.privateKeyPem;
    }
    this.flashMs = Math.round(ctx.clock() - t0);
    // `flashed` goes to the journal while the device works on its proof (no wire time lost);
    // `verified` is recorded only after both.
    const flashed = this.record('flashed', {
      flashMs: String(this.flashMs),
      bytes: String(write?.bytesWritten ?? 0),
      passes: String(write?.passes ?? 0),
      rewritten: write ? '1' : '0',
    });
    flashed.catch(() => undefined); // handled below; no unhandled rejection while the proof runs
    const t1 = ctx.clock();
    let verifiedBy = 'read-back';
    try {
      if (canProvePossession(driver)) {
        this.step('prove');
        await driver.provePossession({
          nonce: ctx.nonce(),
          certificatePem: b.certificatePem,
          signal: ctx.signal,
        });
        verifiedBy = 'read-back+possession';
      }
    } catch (e) {
      await flashed.catch(() => undefined); // the failure is recorded after the flashed
      throw e;
    }
    await flashed;
    this.verifyMs = Math.round(ctx.clock() - t1);
    let recorded = await this.record('verified', { verifyMs: String(this.verifyMs), verifiedBy });
    if (this.wantsConnect(driver)) recorded = await this.firstConnect(driver, bl);
    return this.result(write ? 'verified' : 'already', recorded, undefined, verifiedBy);
  }

  /** Strategy claim: write the claim, then the device provisions itself (claim-visit.ts). */
  private async claim(driver: DeviceDriver, lookup: Parameters<typeof claimVisit>[1]): Promise<DeviceResult> {
    const { ctx } = this;
    let recorded: RecordedIn = 'none';
    const r = await claimVisit(driver, lookup, {
      step: (s) => this.step(s),
      progress: (p) =>
        ctx.emit({
          event: 'progress',
          port: ctx.port,
          serial: this.serial,
          ...(p as { object: never; bytesSent: number; bytesTotal: number }),
        }),
      record: async (to, fields) => (recorded = await this.record(to, fields)),
      connectStage: () => (this.stage = CONNECT_STAGE),
      ...(ctx.keys ? { keys: ctx.keys } : {}),
      clock: () => ctx.clock(),
      signal: ctx.signal,
    });
    this.flashMs = r.flashMs;
    this.verifyMs = r.verifyMs;
    this.bytes = r.written?.bytesWritten ?? 0;
    this.connect = { ms: r.connect.ms, attempts: r.connect.attempts, endpoint: r.connect.endpoint };
    return this.result(r.written ? 'verified' : 'already', recorded, undefined, 'read-back');
  }

  /** The profile decides; unset means "whenever the driver can". */
  private wantsConnect(driver: DeviceDriver): boolean {
    const wanted = this.ctx.firstConnect;
    if (wanted === false) return false;
    if (canConnect(driver)) return true;
    if (wanted === true)
      throw new ProvlineError(
        'DRIVER_UNSUPPORTED',
        `the ${driver.name} driver cannot make a first connect, and the profile asks for one`,
        { retryable: false, hint: 'set `station.firstConnect: false` in the profile' },
      );
    return false;
  }

  /**
   * The device connects to its endpoint as its thing with what it now holds; `connected` is
   * recorded only on its own report of a CONNACK 0. A failure from here on is the connect's.
   */
  private async firstConnect(driver: DeviceDriver, bl: BundleLookup): Promise<RecordedIn> {
    if (!canConnect(driver)) throw new Error('firstConnect without the ability');
    const { ctx } = this;
    const b = bl.bundle;
    const address = mqttAddress(b.endpoint);
    if (!address)
      throw new ProvlineError(
        'STATION_BUNDLE_INCOMPLETE',
        `the bundle of device ${this.serial} (batch ${b.batchId}) names no MQTT endpoint ("${b.endpoint}"), so it cannot connect`,
        {
          hint: 'the batch has no endpoint yet (see `provline status`); or set `station.firstConnect: false` in the profile',
        },
      );
    this.stage = CONNECT_STAGE;
    this.step('connect');
    const t0 = ctx.clock();
    const r = await driver.firstConnect({ ...address, clientId: b.thingName, signal: ctx.signal });
    const endpoint = `${address.host}:${address.port}`;
    this.connect = { ms: Math.round(ctx.clock() - t0), attempts: r.attempts.length, endpoint };
    return this.record('connected', {
      connectMs: String(this.connect.ms),
      connectAttempts: String(r.attempts.length),
      endpoint,
      clientId: b.thingName,
    });
  }

  /**
   * A failed visit. Journalled only when it is the device's (or its link's) failure and the
   * device has a certificate; a station-side failure (the HSM, the journal) is reported and
   * leaves the journal alone, and so does a device-key device not yet registered (it stays
   * on its allow-list and is retried on its next visit).
   */
  private async failed(error: ProvlineError): Promise<DeviceResult> {
    if (error.code === 'ABORTED' || this.ctx.signal.aborted) return this.result('abandoned', 'none', error);
    if (!this.bundle || !DEVICE_FAILURE.test(error.code)) return this.result('failed', 'none', error);
    try {
      const recorded = await this.record('failed', {}, error);
      return this.result('failed', recorded, error);
    } catch (e) {
      return this.result('failed', 'none', error, undefined, asError(e));
    }
  }

  private async record(
    to: ResultEntry['to'],
    fields: Record<string, string>,
    error?: ProvlineError,
  ): Promise<RecordedIn> {
    const { ctx } = this;
    const bl = this.bundle!;
    this.step('record');
    const entry: ResultEntry = {
      v: RESULT_VERSION,
      id: ctx.newId(),
      attempt: this.attempt,
      at: ctx.now(),
      stationId: ctx.stationId,
      batchId: bl.batchId,
      serial: this.serial,
      to,
      // Where each state was reached stays beside the latest station and port (`provline device`).
      fields: {
        stationId: ctx.stationId,
        port: ctx.port,
        [`station:${to}`]: ctx.stationId,
        [`port:${to}`]: ctx.port,
        ...fields,
      },
      ...(error ? { error: { code: error.code, message: error.message, stage: this.stage } } : {}),
    };
    const r = await ctx.store.record(entry);
    if (r.applied === 'rejected')
      throw new ProvlineError(
        'STATION_RECORD_REJECTED',
        `the journal refused to record device ${this.serial} as ${to}${r.reason ? ` (${r.reason})` : ''}`,
        { hint: 'look the device up with `provline status`; it may have moved to another batch' },
      );
    return r.in;
  }

  private step(step: StationStep): void {
    this.ctx.emit({ event: 'step', port: this.ctx.port, serial: this.serial, step });
  }

  private result(
    outcome: Outcome,
    recorded: RecordedIn,
    error?: ProvlineError,
    verifiedBy?: string,
    recordError?: ProvlineError,
  ): DeviceResult {
    const { ctx } = this;
    const who = `Station ${ctx.stationId} ${ctx.port}: device ${this.serial}`;
    const how = `${verifiedBy === 'read-back+possession' ? 'read back, possession proven' : 'read back'}${
      this.connect
        ? `, connected to ${this.connect.endpoint} as its thing${this.connect.attempts > 1 ? ` (${this.connect.attempts} attempts)` : ''}`
        : ''
    }`;
    const where = recorded === 'local' ? ' (recorded locally; run `provline station sync` when online)' : '';
    const code = recordError?.code ?? error?.code;
    let message: string;
    switch (outcome) {
      case 'verified':
        message = `${who} verified (${this.bytes ?? 0} bytes written, ${how})${where}`;
        break;
      case 'already':
        message = `${who} already holds its credentials (${how}); nothing written${where}`;
        break;
      case 'refused':
        message = `${who} refused: ${error?.message ?? ''} [${code}]`;
        break;
      case 'abandoned':
        message = `${who} abandoned: the station is stopping; it starts over on its next visit`;
        break;
      case 'failed':
        message = `${who} failed: ${error?.message ?? ''} [${error?.code}]${
          recordError ? `; the failure could not be recorded: ${recordError.message}` : ''
        }`;
        break;
    }
    const hint = recordError?.hint ?? error?.hint;
    return {
      port: ctx.port,
      serial: this.serial,
      ...(this.batchId ? { batchId: this.batchId } : {}),
      outcome,
      ...(code ? { code } : {}),
      message,
      ...(hint ? { hint } : {}),
      ms: Math.round(ctx.clock() - this.startedAt),
      ...(this.flashMs !== undefined ? { flashMs: this.flashMs } : {}),
      ...(this.verifyMs !== undefined ? { verifyMs: this.verifyMs } : {}),
      ...(this.bytes !== undefined ? { bytes: this.bytes } : {}),
      ...(this.connect && (outcome === 'verified' || outcome === 'already')
        ? { connected: true as const, connectMs: this.connect.ms, connectAttempts: this.connect.attempts }
        : {}),
      recorded,
      ...(recordError ? { unrecorded: true } : {}),
    };
  }
}

/** Failures that belong to the device or its link, not to the station. */
const DEVICE_FAILURE = /^(DEVICE_|DRIVER_|TRANSPORT_)/;

function asError(e: unknown): ProvlineError {
  if (isProvlineError(e)) return e;
  return new ProvlineError('STATION_INTERNAL', `unexpected error: ${messageOf(e)}`, { cause: e });
}

/** PKCS#8 DER → PEM text for drivers that write keys as PEM. */
function pkcs8Pem(der: Buffer): string {
  const b64 = der.toString('base64').replace(/.{64}/g, '$&\n');
  return `-----BEGIN PRIVATE KEY-----\n${b64.trimEnd()}\n-----END PRIVATE KEY-----\n`;
}
