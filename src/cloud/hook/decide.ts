/**
 * The hook's decision, as pure functions over the request and the lots it trusts. Deny by
 * default: a request is allowed only for a serial found in a signed allow-list of the very
 * template the request names; the once-only check (a replay is denied) is the store's
 * conditional write, made by the handler after this says yes.
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

export type DenyCode = 'BAD_REQUEST' | 'NO_SERIAL' | 'NOT_IN_LOT' | 'REPLAY' | 'OUT_OF_TIME' | 'STORE_FAILED';

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
  find(serial: string): { list: AllowList; device: AllowedDevice } | undefined;
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

/** Allow only a serial of a lot of this template (before the once-only check). */
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
  const hit = lots.find(serial);
  if (!hit)
    return deny(
      'NOT_IN_LOT',
      `serial ${JSON.stringify(serial)} is in no submitted lot of template ${templateName}`,
    );
  return { allow: true, serial, templateName, batchId: hit.list.batchId, device: hit.device };
}

/** The hook's answer to AWS IoT (`provlineReason` is for people reading logs; AWS ignores it). */
export function answerOf(v: Verdict): Record<string, unknown> {
  if (v.allow) return { allowProvisioning: true, parameterOverrides: { ...v.device.parameters } };
  return { allowProvisioning: false, provlineCode: v.denial, provlineReason: v.reason };
}
