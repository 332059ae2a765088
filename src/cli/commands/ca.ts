/**
 * `provline ca create | import-cert | register | status`: the product's factory CA, whose key
 * lives in the HSM (docs/hsm.md "Factory CA"). The PIN comes from hsm.pinFile or the variable
 * named by hsm.pinEnv, never from an option.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import type { Command } from 'commander';
import { caModule as cloudCa, makeClients, requireRoleArn } from '../../cloud/index.js';
import { deviceSubjectAttributes, lintJitpTemplate } from '../../cloud/template/index.js';
import { getProfile, type ResolvedProfile } from '../../config/index.js';
import type { CaSettings } from '../../config/index.js';
import { ProvlineError, usageError } from '../../core/index.js';
import { caModule as hsmCa } from '../../hsm/index.js';
import type { CommandContext } from '../context.js';
import { withHsm } from './hsm.js';

function caOf(profile: ResolvedProfile): CaSettings {
  if (profile.ca) return profile.ca;
  throw new ProvlineError(
    'CA_NOT_CONFIGURED',
    `profile ${profile.name} has no factory CA (no \`ca\` section)`,
    {
      kind: 'invalid-input',
      hint: 'Add `ca: {label: <label>, subject: {CN: <name>}}` to the profile (docs/configuration.md).',
      details: { profile: profile.name },
    },
  );
}

function readPem(file: string, what: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (e) {
    throw new ProvlineError('INPUT_UNREADABLE', `cannot read ${what} ${file}`, {
      kind: 'invalid-input',
      cause: e,
    });
  }
}

/** The PEM blocks of a file, in order (a chain file holds several). */
function pemBlocks(text: string): string[] {
  return [...text.matchAll(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)].map((m) => m[0]);
}

/** Lints a JITP template body for the profile; JITP_TEMPLATE_INVALID listing every problem. */
function lintOrThrow(body: string, profile: ResolvedProfile, source: string): void {
  const problems = lintJitpTemplate(body, deviceSubjectAttributes(profile));
  if (problems.length === 0) return;
  throw new ProvlineError(
    'JITP_TEMPLATE_INVALID',
    `${source} would fail on the devices' first connect:\n${problems.map((p) => `  ${p.path || '/'}: ${p.message}`).join('\n')}`,
    { kind: 'invalid-input', details: { template: source, problems } },
  );
}

export function registerCa(program: Command, ctx: () => CommandContext): void {
  const ca = program
    .command('ca')
    .description(
      "The product's factory CA: its key in the HSM, its certificate, its registration with AWS IoT",
    )
    .addHelpText(
      'after',
      '\nThe CA key is made in the HSM and never leaves it. The user PIN comes from hsm.pinFile or the variable named by hsm.pinEnv.\n',
    );

  ca.command('create')
    .description(
      'Generate the CA key pair in the HSM, and a self-signed CA certificate or a CSR for an offline root',
    )
    .requiredOption('-p, --profile <name>', 'product profile; its `ca` section names and describes the CA')
    .option('--csr-out <file>', 'write a CSR for an offline root here instead of self-signing')
    .option('--json', 'print as JSON')
    .action(async (opts: { profile: string; csrOut?: string; json?: boolean }) => {
      const c = ctx();
      const profile = getProfile(c.loaded, opts.profile);
      const settings = caOf(profile);
      const made = await withHsm(c, (h) =>
        hsmCa.createCa(h, { settings, now: new Date(), csr: opts.csrOut !== undefined }),
      );
      if (opts.csrOut) writeFileSync(opts.csrOut, `${made.csrPem!}\n`);
      const certificateId = made.certificatePem ? cloudCa.caCertificateId(made.certificatePem) : undefined;
      if (opts.json)
        return c.json({ profile: profile.name, ...made, ...(certificateId ? { certificateId } : {}) });
      c.print(
        [
          `created CA "${made.label}" (${made.keyType}) for profile ${profile.name}`,
          `  key   ${made.uri}`,
          certificateId
            ? `  certificate id ${certificateId} (self-signed); next: provline ca register --profile ${profile.name}`
            : `  CSR written to ${opts.csrOut}; have the root sign it, then: provline ca import-cert --profile ${profile.name} --cert <file> [--chain <file>]`,
        ].join('\n'),
      );
    });

  ca.command('import-cert')
    .description(
      'Store the certificate an offline root signed for the CA key (and the chain above it) on the token',
    )
    .requiredOption('-p, --profile <name>', 'product profile')
    .requiredOption('--cert <file>', 'the CA certificate (PEM)')
    .option('--chain <file>', 'the chain above it, issuer first, root last (PEM)')
    .option('--json', 'print as JSON')
    .action(async (opts: { profile: string; cert: string; chain?: string; json?: boolean }) => {
      const c = ctx();
      const profile = getProfile(c.loaded, opts.profile);
      const settings = caOf(profile);
      const certificatePem = readPem(opts.cert, 'the CA certificate');
      const chainPems = opts.chain ? pemBlocks(readPem(opts.chain, 'the chain')) : [];
      const done = await withHsm(c, (h) =>
        hsmCa.importCaCertificate(h, { settings, certificatePem, chainPems }),
      );
      const certificateId = cloudCa.caCertificateId(certificatePem);
      if (opts.json) return c.json({ profile: profile.name, ...done, certificateId });
      c.print(
        `stored the certificate of CA "${done.label}" (${done.subject.replace(/\n/g, ', ')}) with ${done.chainLength} chain certificate(s)\n  certificate id ${certificateId}`,
      );
    });

  ca.command('register')
    .description(
      'Register the CA with AWS IoT: verification certificate signed in the HSM, ACTIVE, auto-registration on (idempotent)',
    )
    .requiredOption('-p, --profile <name>', 'product profile')
    .option('--sni-only', 'register in SNI_ONLY mode (no verification certificate; devices must send SNI)')
    .option('--template <name>', 'JITP: an existing provisioning template of type JITP')
    .option('--template-body', "JITP: the profile's template, inline")
    .option('--role-arn <arn>', 'JITP: the role AWS IoT assumes to provision (default aws.roleArn)')
    .option('--json', 'print as JSON')
    .action(
      async (opts: {
        profile: string;
        sniOnly?: boolean;
        template?: string;
        templateBody?: boolean;
        roleArn?: string;
        json?: boolean;
      }) => {
        const c = ctx();
        const profile = getProfile(c.loaded, opts.profile);
        const settings = caOf(profile);
        if (opts.template && opts.templateBody)
          throw usageError('--template and --template-body exclude each other', 'Name one template.');
        let templateBody: string | undefined;
        if (opts.templateBody) {
          templateBody = readPem(profile.templatePath, 'the template');
          lintOrThrow(templateBody, profile, profile.templatePath); // before anything is signed
        }
        const cloud = makeClients(c.runtime.aws);
        try {
          if (opts.template)
            lintOrThrow(
              await cloudCa.jitpTemplateBody(cloud, opts.template),
              profile,
              `template ${opts.template}`,
            );
          const roleArn =
            templateBody !== undefined ? (opts.roleArn ?? requireRoleArn(c.runtime.aws)) : opts.roleArn;
          const registrationConfig = opts.template
            ? { templateName: opts.template, ...(roleArn ? { roleArn } : {}) }
            : templateBody !== undefined
              ? { templateBody, roleArn }
              : undefined;
          const result = await withHsm(c, async (h) => {
            const now = new Date();
            const view = await hsmCa.describeCa(h, settings, now);
            return cloudCa.registerCa(cloud, {
              caCertificatePem: view.certificatePem,
              mode: opts.sniOnly ? 'SNI_ONLY' : 'DEFAULT',
              verificationCertificate: (registrationCode) =>
                hsmCa.signVerificationCertificate(h, { ca: settings, registrationCode, now: new Date() }),
              ...(registrationConfig ? { registrationConfig } : {}),
            });
          });
          if (opts.json) return c.json({ profile: profile.name, ...withoutBody(result) });
          c.print(
            [
              result.alreadyRegistered
                ? `CA "${settings.label}" is already registered with AWS IoT; nothing registered`
                : `registered CA "${settings.label}" with AWS IoT`,
              ...statusLines(result),
            ].join('\n'),
          );
        } finally {
          cloud.destroy();
        }
      },
    );

  ca.command('status')
    .description(
      "AWS IoT's view of the CA: status, auto-registration, template, certificates registered under it",
    )
    .requiredOption('-p, --profile <name>', 'product profile')
    .option('--json', 'print as JSON')
    .action(async (opts: { profile: string; json?: boolean }) => {
      const c = ctx();
      const profile = getProfile(c.loaded, opts.profile);
      const settings = caOf(profile);
      const view = await withHsm(c, (h) => hsmCa.describeCa(h, settings, new Date()));
      const certificateId = cloudCa.caCertificateId(view.certificatePem);
      const cloud = makeClients(c.runtime.aws);
      try {
        const aws = await cloudCa.describeCa(cloud, certificateId);
        const certificates = aws ? await cloudCa.certificatesUnderCa(cloud, certificateId) : {};
        const total = Object.values(certificates).reduce((a, b) => a + b, 0);
        const local = {
          label: view.label,
          keyType: view.keyType,
          uri: view.uri,
          notBefore: view.notBefore,
          notAfter: view.notAfter,
          certificateId,
        };
        if (opts.json)
          return c.json({
            profile: profile.name,
            ca: { ...local, certificatePem: view.certificatePem, chainPems: view.chainPems },
            registered: aws !== undefined,
            ...(aws ? { aws: withoutBody(aws), certificates: { total, byStatus: certificates } } : {}),
          });
        c.print(
          [
            `CA "${view.label}" (${view.keyType})  ${view.uri}`,
            `  valid ${view.notBefore} .. ${view.notAfter}`,
            `  certificate id ${certificateId}`,
            ...(aws
              ? [
                  ...statusLines(aws),
                  `  certificates under it: ${total}${
                    total
                      ? ` (${Object.entries(certificates)
                          .map(([k, v]) => `${k} ${v}`)
                          .join(', ')})`
                      : ''
                  }`,
                ]
              : [`  not registered with AWS IoT; run: provline ca register --profile ${profile.name}`]),
          ].join('\n'),
        );
      } finally {
        cloud.destroy();
      }
    });
}

type Described = cloudCa.CaDescription;

/** The description with an inline template shown as its size, not its text. */
function withoutBody<T extends Described>(d: T): T {
  const rc = d.registrationConfig;
  if (!rc?.templateBody) return d;
  const { templateBody, ...rest } = rc;
  return {
    ...d,
    registrationConfig: { ...rest, templateBody: `(inline, ${templateBody.length} characters)` },
  };
}

function statusLines(d: Described): string[] {
  const rc = d.registrationConfig;
  const template = rc?.templateName ?? (rc?.templateBody ? 'inline template body' : 'none (JITR only)');
  return [
    `  AWS   ${d.certificateArn}`,
    `  status ${d.status}, auto-registration ${d.autoRegistrationStatus}, mode ${d.certificateMode}`,
    `  JITP template ${template}${rc?.roleArn ? `, role ${rc.roleArn}` : ''}`,
  ];
}
