/**
 * The JITR activator's AWS calls, around the pure decision (decide.ts): DescribeCertificate,
 * then for an `activate` decision CreateThing (attributes and type from the profile),
 * AttachPolicy, AttachThingPrincipal and, last, UpdateCertificate ACTIVE.
 *
 * Activation comes last, as in AWS's own JITP sequence, so ACTIVE means every step before it
 * is done: a replayed event for an ACTIVE certificate is a no-op (no write), and an event
 * replayed after a failure part-way redoes the steps, each of which is safe to repeat (a thing
 * that exists is kept as it is, attaching twice changes nothing).
 *
 * Part of the Lambda package: imports node builtins and @aws-sdk/client-iot only.
 */
import {
  AttachPolicyCommand,
  AttachThingPrincipalCommand,
  CreateThingCommand,
  DescribeCertificateCommand,
  UpdateCertificateCommand,
  type IoTClient,
} from '@aws-sdk/client-iot';
import {
  decide,
  parseRegisteredEvent,
  type CertificateView,
  type CompiledConfig,
  type Decision,
} from './decide.js';

export interface ActivationResult {
  decision: Decision;
  /** The AWS calls that changed something, in order (activate only). */
  steps: string[];
}

/** One line per decision, as the activator logs it (CloudWatch on AWS, stdout locally). */
export interface DecisionLog {
  msg: 'jitr decision';
  profile: string;
  action: Decision['action'];
  certificateId?: string;
  thingName?: string;
  code?: string;
  reason: string;
  steps?: string[];
}

export function decisionLog(config: CompiledConfig, r: ActivationResult): DecisionLog {
  const d = r.decision;
  return {
    msg: 'jitr decision',
    profile: config.settings.profile,
    action: d.action,
    ...(d.certificateId ? { certificateId: d.certificateId } : {}),
    ...(d.action === 'activate' ? { thingName: d.thingName, steps: r.steps } : {}),
    ...(d.action === 'refuse' ? { code: d.code } : {}),
    reason: d.reason,
  };
}

const errorName = (e: unknown): string => (e as { name?: string } | undefined)?.name ?? '';

/** A failed AWS call, named (the Lambda runtime retries a thrown error; so does the next event). */
export class ActivationStepError extends Error {
  constructor(
    readonly step: string,
    readonly certificateId: string,
    cause: unknown,
  ) {
    super(
      `${step} for certificate ${certificateId} failed: ${errorName(cause)} ${(cause as Error).message ?? ''}`.trim(),
      {
        cause,
      },
    );
    this.name = 'ActivationStepError';
  }
}

async function describe(iot: IoTClient, certificateId: string): Promise<CertificateView | undefined> {
  try {
    const out = await iot.send(new DescribeCertificateCommand({ certificateId }));
    const d = out.certificateDescription;
    if (!d?.certificatePem) return undefined;
    return {
      certificateId: d.certificateId ?? certificateId,
      certificateArn: d.certificateArn ?? '',
      certificatePem: d.certificatePem,
      status: d.status ?? 'UNKNOWN',
      ...(d.caCertificateId ? { caCertificateId: d.caCertificateId } : {}),
    };
  } catch (e) {
    if (errorName(e) === 'ResourceNotFoundException') return undefined;
    throw new ActivationStepError('DescribeCertificate', certificateId, e);
  }
}

/** Handles one registered event end to end; throws ActivationStepError when an AWS call fails. */
export async function processEvent(
  iot: IoTClient,
  config: CompiledConfig,
  event: unknown,
  now: () => Date = () => new Date(),
): Promise<ActivationResult> {
  const parsed = parseRegisteredEvent(event);
  if ('problem' in parsed)
    return { decision: { action: 'refuse', code: 'JITR_EVENT_INVALID', reason: parsed.problem }, steps: [] };
  const view = await describe(iot, parsed.certificateId);
  const decision = decide(config, parsed, view, now());
  if (decision.action !== 'activate') return { decision, steps: [] };
  const steps: string[] = [];
  const step = async (name: string, call: () => Promise<unknown>, tolerate?: string): Promise<void> => {
    try {
      await call();
      steps.push(name);
    } catch (e) {
      if (tolerate && errorName(e) === tolerate) return;
      throw new ActivationStepError(name, decision.certificateId, e);
    }
  };
  const { thingName, certificateArn, certificateId } = decision;
  // A thing that exists already (an earlier, interrupted activation; a re-keyed device) is kept.
  await step(
    `CreateThing ${thingName}`,
    () =>
      iot.send(
        new CreateThingCommand({
          thingName,
          ...(decision.thingType ? { thingTypeName: decision.thingType } : {}),
          ...(Object.keys(decision.attributes).length
            ? { attributePayload: { attributes: decision.attributes } }
            : {}),
        }),
      ),
    'ResourceAlreadyExistsException',
  );
  await step(`AttachPolicy ${decision.policyName}`, () =>
    iot.send(new AttachPolicyCommand({ policyName: decision.policyName, target: certificateArn })),
  );
  await step(`AttachThingPrincipal ${thingName}`, () =>
    iot.send(new AttachThingPrincipalCommand({ thingName, principal: certificateArn })),
  );
  await step('UpdateCertificate ACTIVE', () =>
    iot.send(new UpdateCertificateCommand({ certificateId, newStatus: 'ACTIVE' })),
  );
  return { decision, steps };
}
