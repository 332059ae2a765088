/**
 * The factory-CA check a jitp or jitr lot passes before anything is queued (so nothing is
 * signed for a lot that could not provision): the CA can sign in this HSM now, AWS knows it
 * as ACTIVE with auto-registration on, and its registration config is what the strategy
 * needs: a JITP template that lints clean for the profile (jitp), or no template at all (jitr:
 * a CA with a template provisions by JITP and the activator never sees the event).
 */
import type { StrategyName, CaSettings } from '../config/index.js';
import { describeCa, jitpTemplateBody } from '../cloud/index.js';
import type { CloudClients } from '../cloud/index.js';
import { lintProfileTemplate } from '../cloud/template/index.js';
import { ProvlineError } from '../core/index.js';
import { checkSigningCa } from '../hsm/index.js';
import type { Hsm } from '../hsm/index.js';

export interface CaPreflightProfile {
  name: string;
  ca: CaSettings;
  csrSubject: Record<string, string>;
}

export interface CaPreflight {
  caCertificateId: string;
  /** The CA certificate's notAfter (ISO). */
  caNotAfter: string;
}

export async function checkFactoryCa(
  deps: { hsm: Hsm; cloud: CloudClients },
  strategy: StrategyName,
  profile: CaPreflightProfile,
  now: Date,
): Promise<CaPreflight> {
  const ca = await checkSigningCa(deps.hsm, profile.ca, now);
  const id = ca.certificateId;
  const label = `the factory CA "${profile.ca.label}" (${id.slice(0, 12)}…)`;
  const d = await describeCa(deps.cloud, id);
  if (!d)
    throw refusal('CA_NOT_REGISTERED', `${label} of profile ${profile.name} is not registered with AWS IoT`, {
      hint: `Register it: \`provline ca register --profile ${profile.name}${strategy === 'jitp' ? ' --template-body' : ''}\`.`,
      id,
    });
  if (d.status !== 'ACTIVE')
    throw refusal('CA_NOT_ACTIVE', `${label} is ${d.status} in AWS IoT: devices it signs cannot connect`, {
      hint: `Activate it (\`aws iot update-ca-certificate --certificate-id ${id} --new-status ACTIVE\`), or rotate to a new CA.`,
      id,
    });
  if (d.autoRegistrationStatus !== 'ENABLE')
    throw refusal(
      'CA_AUTO_REGISTRATION_OFF',
      `${label} has auto-registration ${d.autoRegistrationStatus}: AWS would refuse every device at its first connect`,
      {
        hint: `Run \`provline ca register --profile ${profile.name}\` again (it enables auto-registration), or \`aws iot update-ca-certificate --certificate-id ${id} --new-auto-registration-status ENABLE\`.`,
        id,
      },
    );
  const rc = d.registrationConfig;
  const hasTemplate = Boolean(rc?.templateName || rc?.templateBody);
  if (strategy === 'jitp') {
    if (!hasTemplate)
      throw refusal(
        'CA_TEMPLATE_MISSING',
        `${label} has no JITP template: AWS would only register each certificate PENDING_ACTIVATION (JITR)`,
        {
          hint: `Attach the profile's template: \`provline ca register --profile ${profile.name} --template-body\` (or --template <name>), or use strategy jitr with an activator.`,
          id,
        },
      );
    const body = rc?.templateBody ?? (await jitpTemplateBody(deps.cloud, rc!.templateName!));
    const problems = lintProfileTemplate(body, 'jitp', profile);
    if (problems.length)
      throw new ProvlineError(
        'JITP_TEMPLATE_INVALID',
        `the JITP template attached to ${label} would fail on the devices' first connect:\n${problems.map((p) => `  ${p.path || '/'}: ${p.message}`).join('\n')}`,
        { kind: 'invalid-input', details: { caCertificateId: id, problems } },
      );
  } else if (hasTemplate) {
    throw refusal(
      'CA_TEMPLATE_UNEXPECTED',
      `${label} carries a JITP template (${rc?.templateName ?? 'inline'}), so AWS provisions its devices by JITP and the JITR activator never sees them`,
      {
        hint: `Use strategy jitp for this CA, or register a CA without a template for jitr (\`provline ca register --profile ${profile.name}\` without --template).`,
        id,
      },
    );
  }
  return { caCertificateId: id, caNotAfter: ca.notAfter.toISOString() };
}

function refusal(
  code:
    | 'CA_NOT_REGISTERED'
    | 'CA_NOT_ACTIVE'
    | 'CA_AUTO_REGISTRATION_OFF'
    | 'CA_TEMPLATE_MISSING'
    | 'CA_TEMPLATE_UNEXPECTED',
  message: string,
  o: { hint: string; id: string },
): ProvlineError {
  return new ProvlineError(code, message, {
    kind: 'invalid-input',
    hint: o.hint,
    details: { caCertificateId: o.id },
  });
}
