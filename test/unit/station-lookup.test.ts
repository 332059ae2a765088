/** What the station decides from what the journal says: pure functions, no devices. */
import { describe, expect, it } from 'vitest';
import { buildPlan } from '../../src/batch/plan.js';
import { getProfile, loadConfig } from '../../src/config/load.js';
import {
  csrSubject,
  decide,
  lookupFromRecord,
  type DeviceLookup,
  type StationIdentity,
} from '../../src/flash/index.js';
import type { BatchView, DeviceRecord } from '../../src/batch/journal.js';
import { MQTT_TLS_PORT, mqttAddress } from '../../src/batch/bundle.js';

const loaded = loadConfig({ env: {} });
const planFor = (profile: string) =>
  buildPlan({
    batchId: `b-${profile}`,
    now: new Date(0),
    profile: getProfile(loaded, profile),
    templateBody: '{}',
    source: { file: 'x.csv', sha256: '0'.repeat(64), rows: 1 },
    rows: [],
  });
const batchOf = (profile: string): BatchView => ({
  plan: planFor(profile),
  endpoint: 'e.iot',
  rootCaPem: 'ROOT',
});
const record = (over: Partial<DeviceRecord> & { fields?: Record<string, string> }): DeviceRecord => ({
  serial: 'S1',
  batch: 'b-mcu-wrapped',
  thingName: 'mcu-S1',
  line: 2,
  state: 'registered',
  createdAt: 0,
  updatedAt: 0,
  at: {},
  ...over,
  fields: { certificatePem: 'CERT', certificateId: 'c1', wrappedKey: 'd3JhcA==', ...over.fields },
});
const lookup = (profile: string, rec: DeviceRecord): DeviceLookup => lookupFromRecord(rec, batchOf(profile));

const station: StationIdentity = { profile: 'mcu-wrapped', driver: 'provline-serial-v1', canRegister: true };
const refusal = (l: DeviceLookup, s = station): string => {
  const d = decide(l, s);
  return d.action === 'refuse' ? d.error.code : d.action;
};

describe('lookupFromRecord', () => {
  it('a registered device has a bundle with the batch root CA, its wrapped key and the KEK label', () => {
    const l = lookup('mcu-wrapped', record({}));
    expect(l).toMatchObject({
      kind: 'bundle',
      kekLabel: 'provline-mcu-kek',
      bundle: {
        certificatePem: 'CERT',
        rootCaPem: 'ROOT',
        wrappedKey: 'd3JhcA==',
        driver: 'provline-serial-v1',
      },
    });
  });

  it('a device that failed at a station after getting its certificate is retried with its bundle', () => {
    expect(lookup('mcu-wrapped', record({ state: 'failed' }))).toMatchObject({
      kind: 'bundle',
      state: 'failed',
    });
  });

  it('a connected device keeps its bundle (a re-seated device is checked again, never refused)', () => {
    expect(lookup('mcu-wrapped', record({ state: 'connected' }))).toMatchObject({ kind: 'bundle' });
  });

  it('a device that failed before its certificate, or is still in the pipeline, is pending', () => {
    const failed = record({
      state: 'failed',
      fields: { certificatePem: '', certificateId: '' },
      error: { code: 'REGISTRATION_REJECTED', message: 'no', stage: 'registration' },
    });
    expect(lookup('mcu-wrapped', failed)).toMatchObject({
      kind: 'pending',
      error: { code: 'REGISTRATION_REJECTED' },
    });
    expect(lookup('mcu-wrapped', record({ state: 'keyed', fields: { certificatePem: '' } }))).toMatchObject({
      kind: 'pending',
      state: 'keyed',
    });
  });

  it('a device-key device on its allow-list registers at the station; a stored CSR is resumed, never replaced', () => {
    const rec = record({
      batch: 'b-nrf91-device',
      state: 'accepted',
      thingName: 'nrf91-1',
      fields: { certificatePem: '' },
    });
    expect(lookup('nrf91-device', rec)).toEqual({
      kind: 'register',
      serial: 'S1',
      batchId: 'b-nrf91-device',
      state: 'accepted',
      profile: 'nrf91-device',
      driver: 'nordic-at',
      driverSettings: { secTag: 16842753 },
      thingName: 'nrf91-1',
      subject: 'CN=nrf91-1',
    });
    const keyed = { ...rec, state: 'keyed' as const, fields: { csrPem: 'CSR' } };
    expect(lookup('nrf91-device', keyed)).toMatchObject({ kind: 'register', csrPem: 'CSR' });
  });

  it('builds the CSR subject CN first, RFC 4514-escaped', () => {
    expect(csrSubject('t-1', { O: 'Acme, Inc.', C: 'DE', OU: '#lab ' })).toBe(
      'CN=t-1,O=Acme\\, Inc.,OU=\\#lab\\ ,C=DE',
    );
  });
});

describe('decide', () => {
  it('writes a complete bundle of this station’s profile', () => {
    expect(refusal(lookup('mcu-wrapped', record({})))).toBe('write');
  });

  it('refuses unknown, unregistered, other-profile and incomplete devices with their own codes', () => {
    expect(refusal({ kind: 'unknown', serial: 'X' })).toBe('STATION_DEVICE_UNKNOWN');
    expect(
      refusal(lookup('mcu-wrapped', record({ state: 'registering', fields: { certificatePem: '' } }))),
    ).toBe('STATION_NOT_REGISTERED');
    expect(refusal(lookup('demo', record({ batch: 'b-demo' })))).toBe('STATION_WRONG_PROFILE');
    const noRoot = lookup('mcu-wrapped', record({}));
    if (noRoot.kind === 'bundle') noRoot.bundle.rootCaPem = '';
    expect(refusal(noRoot)).toBe('STATION_BUNDLE_INCOMPLETE');
    const noKey = lookup('mcu-wrapped', record({ fields: { wrappedKey: '' } }));
    expect(refusal(noKey)).toBe('STATION_BUNDLE_INCOMPLETE');
  });

  it('registers device-key devices only while the journal and AWS can be reached', () => {
    const l = lookup(
      'nrf91-device',
      record({ batch: 'b-nrf91-device', state: 'accepted', fields: { certificatePem: '' } }),
    );
    const nrf = { profile: 'nrf91-device', driver: 'nordic-at' as const, canRegister: true };
    expect(refusal(l, nrf)).toBe('register');
    expect(refusal(l, { ...nrf, canRegister: false })).toBe('STATION_OFFLINE');
  });

  it('the operator message names the device and says it was left untouched', () => {
    const d = decide({ kind: 'unknown', serial: 'SN123' }, station);
    expect(d.action === 'refuse' && d.error.message).toBe('device SN123 is not in any submitted lot');
    expect(d.action === 'refuse' && d.error.hint).toMatch(/nothing was written/);
  });
});

describe('mqttAddress (a bundle endpoint)', () => {
  it("reads host:port, and a bare host (every bundle before ports) as AWS's 8883", () => {
    expect(mqttAddress('localhost:40123')).toEqual({ host: 'localhost', port: 40123 });
    expect(mqttAddress('a1b2c3d4e5f6a7-ats.iot.us-east-1.amazonaws.com')).toEqual({
      host: 'a1b2c3d4e5f6a7-ats.iot.us-east-1.amazonaws.com',
      port: MQTT_TLS_PORT,
    });
    expect(mqttAddress('[::1]:8883')).toEqual({ host: '::1', port: 8883 });
    expect(mqttAddress(' 127.0.0.1:1 ')).toEqual({ host: '127.0.0.1', port: 1 });
  });

  it('is undefined for what is no endpoint: empty, a URL, a port out of range', () => {
    for (const bad of ['', 'https://x.iot.amazonaws.com', 'host:0', 'host:65536', 'host:', 'a b'])
      expect(mqttAddress(bad), bad).toBeUndefined();
  });
});
