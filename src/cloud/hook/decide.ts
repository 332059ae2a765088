/**
 * The hook's decision, as pure functions over the request and the lots it trusts. Deny by
 * default: a request is allowed only for a serial found in a signed allow-list of the very
 * template the request names, sent by a device of that serial's lot (when the lot names a lot
 * parameter). The once-only check is the store's conditional write, made by the handler after
 * this says yes; when a serial is marked already, `markerRule` says whether the earlier
 * attempt completed (a replay, denied), may still be running (denied for now), or was
 * abandoned before RegisterThing completed (the new request may take the serial over).
 */
import type { AllowedDevice, AllowList } from './allow-list.js';

/** AWS's pre-provisioning hook request (payloadVersion 2020-04-01). */
export interface HookRequest {
  claimCertificateId: string;
  certificateId: string;
  certificatePem?: string;
  templateArn: string;
  clientId: string;
  parameters: Record<string, string>;
}

export type DenyCode =
  | 'BAD_REQUEST'
  | 'NO_SERIAL'
  | 'NOT_IN_LOT'
  | 'NO_LOT'
  | 'WRONG_LOT'
  | 'REPLAY'
  | 'IN_PROGRESS'
  | 'OUT_OF_TIME'
  | 'STORE_FAILED';

export type Verdict =
  | {
      allow: true;
      serial: string;
      templateName: string;
      batchId: string;
      device: AllowedDevice;
    }
  | { allow: false; denial: DenyCode; reason: string; serial: string; templateName: string };

/** Where the lots of one template are looked up by serial. */
export interface LotIndex {
  /** Every lot of the template that lists `serial` (oldest first); empty when none does. */
  find(serial: string): Array<{ list: AllowList; device: AllowedDevice }>;
  /** The serial parameter the lots name (the first lot's; all lots of a template share it). */
  serialParameter(): string | undefined;
}

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

const TEMPLATE_ARN = /^arn:aws[a-z-]*:iot:[a-z0-9-]+:\d{12}:provisioningtemplate\/([0-9A-Za-z_-]{1,36})$/;

/** The request, or a reason it is not one. */
export function readRequest(event: unknown): { request: HookRequest; templateName: string } | string {
  if (!isObject(event)) return 'the event is not a JSON object';
  const { claimCertificateId, certificateId, templateArn, clientId, parameters } = event;
  if (typeof templateArn !== 'string') return 'the event has no templateArn';
  const m = TEMPLATE_ARN.exec(templateArn);
  if (!m) return `templateArn ${JSON.stringify(templateArn)} is not a provisioning template ARN`;
  if (typeof certificateId !== 'string' || typeof claimCertificateId !== 'string')
    return 'the event has no certificateId or claimCertificateId';
  const params: Record<string, string> = {};
  if (parameters !== undefined && parameters !== null) {
    if (!isObject(parameters)) return 'parameters is not an object';
    for (const [k, v] of Object.entries(parameters)) if (typeof v === 'string') params[k] = v;
  }
  return {
    request: {
      claimCertificateId,
      certificateId,
      templateArn,
      clientId: typeof clientId === 'string' ? clientId : '',
      parameters: params,
    },
    templateName: m[1]!,
  };
}

/** Allow only a serial of a lot of this template, sent by a device of that lot (before the once-only check). */
export function judge(
  request: HookRequest,
  templateName: string,
  lots: LotIndex,
  serialParameter: string,
): Verdict {
  const serial = request.parameters[serialParameter] ?? '';
  const deny = (code: DenyCode, reason: string): Verdict => ({
    allow: false,
    denial: code,
    reason,
    serial,
    templateName,
  });
  if (!serial)
    return deny(
      'NO_SERIAL',
      `the request has no ${serialParameter} parameter; the device must send its serial as parameters.${serialParameter}`,
    );
  const hits = lots.find(serial);
  if (!hits.length)
    return deny(
      'NOT_IN_LOT',
      `serial ${JSON.stringify(serial)} is in no submitted lot of template ${templateName}`,
    );
  const ofLot = (h: (typeof hits)[number]): boolean =>
    h.list.lotParameter === undefined || request.parameters[h.list.lotParameter] === h.list.batchId;
  const hit = hits.find(ofLot);
  if (hit) return { allow: true, serial, templateName, batchId: hit.list.batchId, device: hit.device };
  const lotParameter = hits[0]!.list.lotParameter!;
  const sent = request.parameters[lotParameter];
  const owners = hits.map((h) => h.list.batchId).join(', ');
  if (sent === undefined || sent === '')
    return deny(
      'NO_LOT',
      `the request has no ${lotParameter} parameter; serial ${JSON.stringify(serial)} belongs to lot ${owners}, and a device of that lot sends parameters.${lotParameter} = its lot`,
    );
  return deny(
    'WRONG_LOT',
    `serial ${JSON.stringify(serial)} belongs to lot ${owners}, but the device says it is of lot ${JSON.stringify(sent)}: a device sending a serial of another lot`,
  );
}

/** The once-only marker of a serial: which certificate the hook allowed it for, and when. */
export interface UsedMarker {
  certificateId: string;
  /** ISO time of the allow. */
  at: string;
}

/**
 * What an earlier allow of the same serial means for a new request (pure):
 *
 * - `same-certificate`: the request is a retry of the very RegisterThing that was allowed (AWS's
 *   ownership token is single-use, so it cannot be a replay of a completed one): allow again;
 * - `completed`: the earlier certificate left PENDING_ACTIVATION, so its RegisterThing went
 *   through (ACTIVE, or set INACTIVE or REVOKED since): a replay, denied;
 * - `in-progress`: the earlier certificate is still pending and the allow is younger than the
 *   lease, so AWS may still be applying the template for it: denied for now;
 * - `abandoned`: the earlier certificate is still pending after the lease, or is gone (AWS
 *   deletes a pending certificate whose token expired unused): its RegisterThing never
 *   completed, and the new request may take the serial over.
 *
 * `status` is the earlier certificate's status in AWS IoT, undefined when it does not exist.
 */
export type MarkerRule = 'same-certificate' | 'completed' | 'in-progress' | 'abandoned';

export function markerRule(
  marker: UsedMarker,
  certificateId: string,
  status: string | undefined,
  now: number,
  leaseMs: number,
): MarkerRule {
  if (marker.certificateId === certificateId) return 'same-certificate';
  if (status !== undefined && status !== 'PENDING_ACTIVATION') return 'completed';
  if (status !== undefined && now - Date.parse(marker.at) < leaseMs) return 'in-progress';
  return 'abandoned';
}

/** The hook's answer to AWS IoT (`provlineReason` is for people reading logs; AWS ignores it). */
export function answerOf(v: Verdict): Record<string, unknown> {
  if (v.allow) return { allowProvisioning: true, parameterOverrides: { ...v.device.parameters } };
  return { allowProvisioning: false, provlineCode: v.denial, provlineReason: v.reason };
}
