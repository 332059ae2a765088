/**
 * The pure parts of fleet provisioning by claim: the signed allow-list (a changed byte, another
 * key or another format is refused), the hook's decision, the generated claim policy and its
 * check, the fleet template check, claim rotation and revocation, and the per-serial outcomes.
 * Software keys stand in for the HSM here; the integration test signs in SoftHSM2.
 */
import { generateKeyPairSync, sign } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { claimPolicy, claimPolicyGaps, clientIdPrefixOf } from '../../src/cloud/claim/policy.js';
import type { HookRecords } from '../../src/cloud/claim/aws.js';
import { outsideAllowList, serialOutcome } from '../../src/cloud/claim/outcomes.js';
import {
  dueForDeactivation,
  revoked,
  rotated,
  type ClaimCredential,
  type ClaimState,
} from '../../src/cloud/claim/state.js';
import { claimTemplateProblems } from '../../src/cloud/claim/template.js';
import {
  AllowListError,
  keyIdOf,
  openAllowList,
  rowsDigest,
  sealAllowList,
  type AllowList,
} from '../../src/cloud/hook/allow-list.js';
import { answerOf, judge, markerRule, readRequest, type LotIndex } from '../../src/cloud/hook/decide.js';
import { ROOT } from '../helpers/cli.js';

const signer = () => {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  return {
    publicKey,
    keyId: keyIdOf(publicKey),
    sign: (data: Buffer) =>
      Promise.resolve(sign('sha256', data, { key: privateKey, dsaEncoding: 'ieee-p1363' })),
  };
};

const lot = (
  devices: AllowList['devices'] = { SN1: { thingName: 's-SN1', parameters: { Hw: 'B' } } },
): AllowList => ({
  version: 1,
  templateName: 'tpl',
  batchId: 'b1',
  profile: 'p',
  createdAt: '2026-01-01T00:00:00Z',
  serialParameter: 'SerialNumber',
  rowsSha256: rowsDigest(devices),
  devices,
});

describe('the signed allow-list', () => {
  it('opens with the trusted key, and refuses a changed payload, another key, or another format', async () => {
    const k = signer();
    const sealed = await sealAllowList(lot(), k.keyId, k.sign);
    const trusted = new Map([[k.keyId, k.publicKey]]);
    expect(openAllowList(JSON.stringify(sealed), trusted).devices.SN1!.thingName).toBe('s-SN1');

    const tampered = { ...sealed, payload: sealed.payload.replace('s-SN1', 's-SN2') };
    expect(() => openAllowList(JSON.stringify(tampered), trusted)).toThrow(/signature does not match/);
    const other = signer();
    expect(() => openAllowList(JSON.stringify(sealed), new Map([[other.keyId, other.publicKey]]))).toThrow(
      /does not trust/,
    );
    expect(() => openAllowList('{"format":"x"}', trusted)).toThrow(AllowListError);
    expect(() => openAllowList('not json', trusted)).toThrow(/not JSON/);
  });

  it('the rows digest ignores order and sees any changed value', () => {
    const a = {
      A: { thingName: 'a', parameters: { x: '1', y: '2' } },
      B: { thingName: 'b', parameters: {} },
    };
    const b = {
      B: { thingName: 'b', parameters: {} },
      A: { thingName: 'a', parameters: { y: '2', x: '1' } },
    };
    expect(rowsDigest(a)).toBe(rowsDigest(b));
    expect(rowsDigest(a)).not.toBe(rowsDigest({ ...a, B: { thingName: 'b', parameters: { z: '' } } }));
  });
});

describe("the hook's decision", () => {
  const index = (l: AllowList): LotIndex => ({
    find: (serial) => (l.devices[serial] ? [{ list: l, device: l.devices[serial] }] : []),
    serialParameter: () => l.serialParameter,
  });
  /** Several lots of one template, oldest first, as the handler indexes them. */
  const lotsIndex = (...ls: AllowList[]): LotIndex => ({
    find: (serial) =>
      ls.filter((l) => l.devices[serial]).map((l) => ({ list: l, device: l.devices[serial]! })),
    serialParameter: () => ls[0]?.serialParameter,
  });
  const judged = (parameters: Record<string, string>, index: LotIndex) => {
    const read = readRequest(event(parameters));
    if (typeof read === 'string') throw new Error(read);
    return judge(read.request, read.templateName, index, 'SerialNumber');
  };
  const event = (parameters: Record<string, string>, template = 'tpl') => ({
    claimCertificateId: 'c'.repeat(64),
    certificateId: 'd'.repeat(64),
    certificatePem: '',
    templateArn: `arn:aws:iot:us-east-1:123456789012:provisioningtemplate/${template}`,
    clientId: 's-SN1',
    parameters,
  });

  it('allows a serial of the lot, with the row as parameterOverrides; denies by default otherwise', () => {
    const read = readRequest(event({ SerialNumber: 'SN1', ThingName: 'whatever-the-device-says' }));
    if (typeof read === 'string') throw new Error(read);
    const v = judge(read.request, read.templateName, index(lot()), 'SerialNumber');
    expect(v).toMatchObject({ allow: true, serial: 'SN1', batchId: 'b1' });
    expect(answerOf(v)).toEqual({ allowProvisioning: true, parameterOverrides: { Hw: 'B' } });

    const out = readRequest(event({ SerialNumber: 'SN9' }));
    if (typeof out === 'string') throw new Error(out);
    const denied = judge(out.request, out.templateName, index(lot()), 'SerialNumber');
    expect(denied).toMatchObject({ allow: false, denial: 'NOT_IN_LOT' });
    expect(answerOf(denied)).toMatchObject({ allowProvisioning: false });

    const none = readRequest(event({}));
    if (typeof none === 'string') throw new Error(none);
    expect(judge(none.request, none.templateName, index(lot()), 'SerialNumber')).toMatchObject({
      denial: 'NO_SERIAL',
    });
  });

  it('with a lot parameter, allows a serial only to a device that names its lot; another lot, or none, is denied saying whose serial it is', () => {
    const a = { ...lot(), batchId: 'lot-a', lotParameter: 'LotId' };
    const b = {
      ...lot({ SN2: { thingName: 's-SN2', parameters: {} } }),
      batchId: 'lot-b',
      lotParameter: 'LotId',
    };
    const index = lotsIndex(a, b);
    expect(judged({ SerialNumber: 'SN1', LotId: 'lot-a' }, index)).toMatchObject({
      allow: true,
      batchId: 'lot-a',
    });
    const wrong = judged({ SerialNumber: 'SN1', LotId: 'lot-b' }, index);
    expect(wrong).toMatchObject({ allow: false, denial: 'WRONG_LOT' });
    expect(wrong.allow === false && wrong.reason).toContain(
      'belongs to lot lot-a, but the device says it is of lot "lot-b"',
    );
    expect(judged({ SerialNumber: 'SN1' }, index)).toMatchObject({ allow: false, denial: 'NO_LOT' });
    // A serial re-submitted (same row) in a later lot: a device of either lot is allowed.
    const again = { ...lot(), batchId: 'lot-c', createdAt: '2026-02-01T00:00:00Z', lotParameter: 'LotId' };
    expect(judged({ SerialNumber: 'SN1', LotId: 'lot-c' }, lotsIndex(a, again))).toMatchObject({
      allow: true,
      batchId: 'lot-c',
    });
    // A lot published before lots were checked (no lotParameter) does not ask for one.
    expect(judged({ SerialNumber: 'SN1' }, lotsIndex(lot()))).toMatchObject({ allow: true });
  });

  it('a marked serial: the same certificate retries, a completed one is a replay, a pending one holds it for the lease, then it is abandoned', () => {
    const marker = { certificateId: 'A', at: '2026-01-01T00:00:00.000Z' };
    const t0 = Date.parse(marker.at);
    expect(markerRule(marker, 'A', 'PENDING_ACTIVATION', t0 + 1, 15_000)).toBe('same-certificate');
    for (const status of ['ACTIVE', 'INACTIVE', 'REVOKED'])
      expect(markerRule(marker, 'B', status, t0 + 3_600_000, 15_000)).toBe('completed');
    expect(markerRule(marker, 'B', 'PENDING_ACTIVATION', t0 + 14_999, 15_000)).toBe('in-progress');
    expect(markerRule(marker, 'B', 'PENDING_ACTIVATION', t0 + 15_000, 15_000)).toBe('abandoned');
    // AWS deleted the pending certificate when its token expired unused.
    expect(markerRule(marker, 'B', undefined, t0 + 1, 15_000)).toBe('abandoned');
  });

  it('refuses what is not a hook request', () => {
    expect(readRequest(null)).toMatch(/not a JSON object/);
    expect(readRequest({ ...event({}), templateArn: 'arn:aws:iot:us-east-1:1:thing/x' })).toMatch(
      /not a provisioning template ARN/,
    );
    expect(readRequest({ ...event({}), certificateId: 3 })).toMatch(/no certificateId/);
  });
});

describe('the claim policy', () => {
  const where = { region: 'us-east-1', account: '123456789012', templateName: 'tpl' };
  it('generated from the template name: exactly what the fleet exchange needs', () => {
    const doc = claimPolicy({ ...where, clientIdPrefix: 'sensor-' });
    expect(claimPolicyGaps(doc, { ...where, clientIds: ['sensor-SN1'], deviceKey: 'csr' })).toEqual([]);
    expect(claimPolicyGaps(doc, { ...where, clientIds: ['sensor-SN1'], deviceKey: 'keys' })).toEqual([]);
    // Least privilege: other client ids, other templates and other topics are not allowed.
    expect(claimPolicyGaps(doc, { ...where, clientIds: ['other-SN1'], deviceKey: 'csr' })).toHaveLength(1);
    expect(
      claimPolicyGaps(doc, { ...where, templateName: 'other', clientIds: ['sensor-1'], deviceKey: 'csr' }),
    ).toHaveLength(5);
    const text = JSON.stringify(doc);
    expect(text).not.toContain('topic/*');
    expect(text).toContain('topicfilter/$aws/provisioning-templates/tpl/provision/*');
  });

  it('a policy without Subscribe is reported, answer by answer; a Deny wins', () => {
    const noSub = JSON.parse(
      readFileSync(join(ROOT, 'test/fixtures/claim/claim-no-subscribe.json'), 'utf8'),
    ) as unknown;
    const gaps = claimPolicyGaps(noSub, { ...where, clientIds: ['x'], deviceKey: 'csr' });
    expect(gaps).toHaveLength(4);
    expect(gaps.every((g) => g.startsWith('iot:Subscribe on'))).toBe(true);
    const doc = claimPolicy({ ...where, clientIdPrefix: '' }) as { Statement: unknown[] };
    doc.Statement.push({ Effect: 'Deny', Action: 'iot:Receive', Resource: '*' });
    expect(claimPolicyGaps(doc, { ...where, clientIds: ['x'], deviceKey: 'csr' })).toHaveLength(4);
  });

  it('client-id prefix of a thing-name pattern', () => {
    expect(clientIdPrefixOf('sensor-{serial}')).toBe('sensor-');
    expect(clientIdPrefixOf('{serial}')).toBe('');
  });
});

describe('the fleet template check', () => {
  const body = readFileSync(join(ROOT, 'config/templates/sensor-fleet.json'), 'utf8');
  it('passes when every hook parameter, the serial and the lot are declared; names what is missing', () => {
    expect(
      claimTemplateProblems(body, ['SerialNumber', 'ThingName', 'HardwareRevision'], 'SerialNumber', 'LotId'),
    ).toEqual([]);
    const problems = claimTemplateProblems(body, ['Colour'], 'Imei', 'Batch');
    expect(problems.join('\n')).toContain('declares no parameter Imei');
    expect(problems.join('\n')).toContain(
      'declares no parameter Batch (the lot the devices send, claim.lotParameter)',
    );
    expect(problems.join('\n')).toContain('declares no parameter Colour');
  });
});

describe('claim rotation and revocation', () => {
  const cred = (id: string): ClaimCredential => ({
    certificateId: id,
    certificateArn: `arn:aws:iot:us-east-1:123456789012:cert/${id}`,
    certificatePem: '',
    wrappedKey: 'AAAA',
    kekId: 'k',
    kekLabel: 'k',
    keyType: 'P-256',
    policyName: `p-${id}`,
    createdAt: '2026-01-01T00:00:00Z',
    status: 'ACTIVE',
  });
  const state: ClaimState = {
    version: 1,
    profile: 'p',
    templateName: 'tpl',
    serialParameter: 'SerialNumber',
    deviceKey: 'csr',
    signingPublicKeyPem: '',
    current: cred('a'),
    previous: [],
  };
  it('rotate keeps the old claim until its grace period ends; revoke leaves no current claim', () => {
    const now = new Date('2026-02-01T00:00:00Z');
    const r = rotated(state, cred('b'), now, 24);
    expect(r.current!.certificateId).toBe('b');
    expect(r.previous[0]).toMatchObject({
      certificateId: 'a',
      status: 'RETIRING',
      deactivateAt: '2026-02-02T00:00:00.000Z',
    });
    expect(dueForDeactivation(r, new Date('2026-02-01T23:59:59Z'))).toEqual([]);
    expect(dueForDeactivation(r, new Date('2026-02-02T00:00:00Z')).map((c) => c.certificateId)).toEqual([
      'a',
    ]);
    const v = revoked(r, now, 'leaked');
    expect(v.current).toBeUndefined();
    expect(v.previous[0]).toMatchObject({ certificateId: 'b', status: 'REVOKED', reason: 'leaked' });
  });
});

describe('per-serial outcomes', () => {
  it('provisioned, denied with the latest reason, not seen; things outside the allow-list', () => {
    const records: HookRecords = {
      used: new Map([
        [
          'A',
          {
            serial: 'A',
            batchId: 'b',
            thingName: 't-A',
            certificateId: 'c',
            claimCertificateId: 'k',
            clientId: 't-A',
            at: '1',
          },
        ],
      ]),
      denied: new Map([
        [
          'B',
          [
            { serial: 'B', code: 'OUT_OF_TIME', reason: 'slow', at: '2026-01-01T00:00:00Z' },
            { serial: 'B', code: 'REPLAY', reason: 'again', at: '2026-01-02T00:00:00Z' },
          ],
        ],
      ]),
    };
    expect(serialOutcome(records, 'A')).toMatchObject({ claim: 'provisioned', certificateId: 'c' });
    expect(serialOutcome(records, 'B')).toEqual({
      claim: 'denied',
      reason: 'REPLAY: again (2 denials)',
      at: '2026-01-02T00:00:00Z',
    });
    expect(serialOutcome(records, 'C')).toEqual({ claim: 'not seen', reason: '' });
    // A device that presented another serial: denied under that one, found by its client id.
    records.denied.set('C-IMPOSTOR', [
      { serial: 'C-IMPOSTOR', code: 'NOT_IN_LOT', reason: 'not listed', clientId: 't-C', at: '3' },
    ]);
    expect(serialOutcome(records, 'C', 't-C')).toEqual({
      claim: 'denied',
      reason: 'NOT_IN_LOT: not listed (its device, client id t-C, presented serial "C-IMPOSTOR")',
      at: '3',
    });
    expect(serialOutcome(records, 'C', 't-other')).toEqual({ claim: 'not seen', reason: '' });
    // Its own serial's records come first.
    expect(serialOutcome(records, 'B', 't-C').reason).toBe('REPLAY: again (2 denials)');
    expect(outsideAllowList(['t-A', 't-X'], [lot({ A: { thingName: 't-A', parameters: {} } })])).toEqual([
      't-X',
    ]);
  });
});
