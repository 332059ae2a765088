/**
 * `provline claim create | rotate | revoke | status | issue | publish | hook`: fleet
 * provisioning by claim (docs/claim.md). The claim key is made in the HSM and kept only wrapped;
 * the HSM PIN comes from hsm.pinFile or the variable named by hsm.pinEnv, never an option.
 */
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import {
  HOOK_HANDLER,
  hookPackage,
  makeClients,
  requireBucket,
  type CloudClients,
} from '../../cloud/index.js';
import { leaseFromEnv, mapInStandIn, startHookRunner } from '../../cloud/hook/index.js';
import { getProfile, type ResolvedProfile } from '../../config/index.js';
import { ProvlineError } from '../../core/index.js';
import { openHsm, type Hsm } from '../../hsm/index.js';
import {
  claimOf,
  claimStatus,
  ClaimStore,
  createClaim,
  HOOK_PREFIX,
  issueClaim,
  publishLot,
  revokeClaim,
  rotateClaim,
  type ClaimDeps,
} from '../../jobs/index.js';
import type { CommandContext } from '../context.js';
import { localHookHandler } from '../pipeline/claim-lot.js';
import { openPipeline, type PipelineHandles } from '../pipeline/open.js';

/** Runs `fn` with the claim operations' dependencies, closing everything after. */
export async function withClaimDeps<T>(
  c: CommandContext,
  fn: (deps: ClaimDeps, p: PipelineHandles, cloud: CloudClients) => Promise<T>,
): Promise<T> {
  const p = await openPipeline(c);
  const cloud = makeClients(c.runtime.aws);
  let hsm: Hsm | undefined;
  try {
    return await fn(
      {
        cloud,
        store: new ClaimStore(p.redis, p.prefix),
        hsm: async () => (hsm ??= await openHsm(await c.hsmSettings(), { env: c.env })),
      },
      p,
      cloud,
    );
  } finally {
    hsm?.close();
    cloud.destroy();
    await p.close();
  }
}

const profileOption = ['-p, --profile <name>', 'a claim profile (strategy claim)'] as const;

/** The hook's lease from PROVLINE_HOOK_LEASE_MS, as the Lambda reads it; a bad value is a usage error. */
function hookLease(env: NodeJS.ProcessEnv): { leaseMs?: number } {
  try {
    return leaseFromEnv(env);
  } catch (e) {
    throw new ProvlineError('USAGE', (e as Error).message, { kind: 'usage' });
  }
}

function claimLines(
  profile: ResolvedProfile,
  state: Awaited<ReturnType<typeof createClaim>>['state'],
): string[] {
  const lines = [`claim of profile ${profile.name}, fleet template ${state.templateName}`];
  if (state.current)
    lines.push(
      `  current  ${state.current.certificateId}  ${state.current.status}  made ${state.current.createdAt}  policy ${state.current.policyName}`,
    );
  else lines.push('  current  none (revoked; `provline claim rotate` makes a new one)');
  for (const c of state.previous)
    lines.push(
      `  earlier  ${c.certificateId}  ${c.status}${c.deactivateAt && c.status === 'RETIRING' ? ` until ${c.deactivateAt}` : ''}${c.revokedAt ? ` at ${c.revokedAt}${c.reason ? ` (${c.reason})` : ''}` : ''}`,
    );
  return lines;
}

export function registerClaim(program: Command, ctx: () => CommandContext): void {
  const claim = program
    .command('claim')
    .description(
      'Fleet provisioning by claim: the claim, the fleet template and its hook, trusted-user claims',
    )
    .addHelpText(
      'after',
      '\nThe claim key is made in the HSM and leaves it only wrapped under the profile KEK. See docs/claim.md.\n',
    );

  claim
    .command('create')
    .description('Make the fleet template (with the hook), the allow-list signing key and the claim')
    .requiredOption(...profileOption)
    .option('--json', 'print as JSON')
    .action(async (opts: { profile: string; json?: boolean }) => {
      const c = ctx();
      const profile = getProfile(c.loaded, opts.profile);
      const r = await withClaimDeps(c, (d) => createClaim(d, profile));
      if (opts.json)
        return c.json({ profile: profile.name, made: r.made, template: r.template, claim: view(r.state) });
      c.print(
        [
          r.made
            ? `made a claim for profile ${profile.name}`
            : `profile ${profile.name} already has a claim; nothing made (rotate it with \`provline claim rotate\`)`,
          `fleet template ${r.state.templateName}: ${r.template.action} (default version ${r.template.defaultVersionId}), hook ${profile.claim!.hookArn}`,
          ...claimLines(profile, r.state),
        ].join('\n'),
      );
    });

  claim
    .command('rotate')
    .description('Make a new claim; the old one stays active for the grace period, then is deactivated')
    .requiredOption(...profileOption)
    .option('--grace-hours <h>', 'override claim.graceHours (0: deactivate the old claim now)', Number)
    .option('--json', 'print as JSON')
    .action(async (opts: { profile: string; graceHours?: number; json?: boolean }) => {
      const c = ctx();
      const profile = getProfile(c.loaded, opts.profile);
      if (opts.graceHours !== undefined && !(opts.graceHours >= 0))
        throw new ProvlineError(
          'USAGE',
          `--grace-hours must be a number of hours ≥ 0, got ${String(opts.graceHours)}`,
          {
            kind: 'usage',
          },
        );
      const r = await withClaimDeps(c, (d) => rotateClaim(d, profile, opts.graceHours));
      if (opts.json)
        return c.json({ profile: profile.name, claim: view(r.state), deactivated: r.deactivated });
      c.print([`rotated the claim of profile ${profile.name}`, ...claimLines(profile, r.state)].join('\n'));
    });

  claim
    .command('revoke')
    .description('Turn the current claim off at once (misuse); devices already provisioned are not affected')
    .requiredOption(...profileOption)
    .option('--reason <text>', 'why, for the record', 'revoked by an operator')
    .option('--json', 'print as JSON')
    .action(async (opts: { profile: string; reason: string; json?: boolean }) => {
      const c = ctx();
      const profile = getProfile(c.loaded, opts.profile);
      const state = await withClaimDeps(c, (d) => revokeClaim(d, profile, opts.reason));
      if (opts.json) return c.json({ profile: profile.name, claim: view(state) });
      c.print(
        [`revoked the claim of profile ${profile.name} (INACTIVE now)`, ...claimLines(profile, state)].join(
          '\n',
        ),
      );
    });

  claim
    .command('status')
    .description('The claims, how many devices used each, the denials with their reasons')
    .requiredOption(...profileOption)
    .option('--json', 'print as JSON')
    .action(async (opts: { profile: string; json?: boolean }) => {
      const c = ctx();
      const profile = getProfile(c.loaded, opts.profile);
      const s = await withClaimDeps(c, (d) => claimStatus(d, profile));
      if (opts.json) return c.json({ profile: profile.name, ...s, state: undefined, claim: view(s.state) });
      c.print(
        [
          ...claimLines(profile, s.state),
          `lots published ${s.lots} (${s.allowed} serials allowed); provisioned ${s.provisioned}; denied ${s.denials}`,
          ...Object.entries(s.usedBy).map(
            ([id, n]) => `  used ${n}× by ${id === 'temporary' ? 'trusted-user claims' : id}`,
          ),
          ...Object.entries(s.deniedByCode).map(([code, n]) => `  denied ${n}× ${code}`),
          ...s.recentDenials.map((d) => `  ${d.at}  ${d.serial || '(no serial)'}  ${d.code}: ${d.reason}`),
          ...(s.deactivated.length ? [`deactivated now (grace over): ${s.deactivated.join(', ')}`] : []),
        ].join('\n'),
      );
    });

  claim
    .command('issue')
    .description("A temporary claim (5 minutes) for an installer's app: provisioning by trusted user")
    .requiredOption(...profileOption)
    .option('--json', 'print as JSON (the certificate and the private key; pipe it to the app)')
    .action(async (opts: { profile: string; json?: boolean }) => {
      const c = ctx();
      const profile = getProfile(c.loaded, opts.profile);
      const r = await withClaimDeps(c, (d) => issueClaim(d, profile));
      if (opts.json)
        return c.json({
          certificateId: r.certificateId,
          certificatePem: r.certificatePem,
          privateKeyPem: r.privateKeyPem,
          expiration: r.expiration.toISOString(),
          templateName: profile.claim!.templateName,
          policyName: r.policyName,
        });
      c.print(
        [
          `temporary claim ${r.certificateId} for template ${profile.claim!.templateName}, policy ${r.policyName}`,
          `expires ${r.expiration.toISOString()} (the device must finish provisioning before then)`,
          r.certificatePem.trimEnd(),
          r.privateKeyPem.trimEnd(),
        ].join('\n'),
      );
    });

  claim
    .command('publish <batch>')
    .description("Publish (again) a claim lot's signed allow-list where the hook reads it")
    .option('--json', 'print as JSON')
    .action(async (batchId: string, opts: { json?: boolean }) => {
      const c = ctx();
      const r = await withClaimDeps(c, async (d, p) => {
        const plan = await p.batches.plan(batchId);
        const profile = getProfile(c.loaded, plan.profile.name);
        return publishLot(d, plan, profile, plan.devices);
      });
      if (opts.json) return c.json({ batchId, key: r.key, serials: r.count });
      c.print(`published the allow-list of batch ${batchId}: ${r.count} serials at ${r.key}`);
    });

  const hook = claim
    .command('hook')
    .description("provline's pre-provisioning hook, run locally or set up in Lambda");

  hook
    .command('serve')
    .description('Run the hook behind a local HTTP endpoint and map the Lambda ARN to it in the stand-in')
    .requiredOption(...profileOption)
    .option('--port <n>', 'listen port (default: any free one)', Number)
    .option('--no-map', 'do not map the hook in the stand-in')
    .action(async (opts: { profile: string; port?: number; map: boolean }) => {
      const c = ctx();
      const profile = getProfile(c.loaded, opts.profile);
      const settings = claimOf(profile);
      const state = await withClaimDeps(c, async (d) => d.store.get(profile.name));
      if (!state)
        throw new ProvlineError('CLAIM_NOT_FOUND', `profile ${profile.name} has no claim yet`, {
          kind: 'invalid-input',
          hint: `provline claim create --profile ${profile.name}`,
        });
      const cloud = makeClients(c.runtime.aws, { maxAttempts: 2 });
      const runner = await startHookRunner(
        localHookHandler(cloud, state, { ...hookLease(c.env), log: (line) => c.logger.warn(line) }),
        { ...(opts.port ? { port: opts.port } : {}) },
      );
      try {
        if (opts.map && !cloud.aws.useRealAws && cloud.aws.endpoint)
          await mapInStandIn(cloud.aws.endpoint, settings.hookArn, runner.url).catch((e: unknown) => {
            throw new ProvlineError(
              'CLAIM_HOOK_UNREACHABLE',
              `cannot map the hook in the stand-in: ${(e as Error).message}`,
              {
                retryable: true,
                hint: 'Is the stand-in running? `provline stack status`',
              },
            );
          });
        c.print(`hook ${settings.hookArn} serving at ${runner.url}; Ctrl-C stops it`);
        await new Promise<void>((resolve) => {
          process.once('SIGINT', resolve);
          process.once('SIGTERM', resolve);
        });
      } finally {
        await runner.close();
        cloud.destroy();
      }
    });

  hook
    .command('package')
    .description('Write the Lambda deployment package of the hook (handler index.handler)')
    .option('--out <zip>', 'where to write it', 'dist/claim-hook-lambda.zip')
    .action((opts: { out: string }) => {
      const c = ctx();
      const here = dirname(fileURLToPath(import.meta.url));
      const { zip, files } = hookPackage(join(here, '../../cloud/hook'));
      writeFileSync(opts.out, zip);
      c.print(
        `wrote ${opts.out} (${zip.length} bytes): ${files.join(', ')}\n  handler ${HOOK_HANDLER}, runtime nodejs20.x or later, 256 MB, timeout 5 s; environment: \`provline claim hook env --profile <p>\``,
      );
    });

  hook
    .command('env')
    .description("The hook's Lambda environment for a profile (bucket, prefix, trusted public key)")
    .requiredOption(...profileOption)
    .option('--json', 'print as JSON')
    .action(async (opts: { profile: string; json?: boolean }) => {
      const c = ctx();
      const profile = getProfile(c.loaded, opts.profile);
      claimOf(profile);
      const state = await withClaimDeps(c, async (d) => d.store.get(profile.name));
      if (!state)
        throw new ProvlineError('CLAIM_NOT_FOUND', `profile ${profile.name} has no claim yet`, {
          kind: 'invalid-input',
          hint: `provline claim create --profile ${profile.name}`,
        });
      const env = {
        PROVLINE_HOOK_BUCKET: requireBucket(c.runtime.aws),
        PROVLINE_HOOK_PREFIX: HOOK_PREFIX,
        PROVLINE_HOOK_PUBLIC_KEYS: state.signingPublicKeyPem.trim(),
      };
      if (opts.json) return c.json(env);
      c.print(
        Object.entries(env)
          .map(([k, v]) => `${k}=${JSON.stringify(v)}`)
          .join('\n'),
      );
    });
}

/** The claim state without key material (the wrapped key stays out of printed output). */
function view(state: Awaited<ReturnType<typeof createClaim>>['state']): unknown {
  const strip = (cred: NonNullable<typeof state.current>) => {
    const { wrappedKey: _w, ...rest } = cred;
    return rest;
  };
  return {
    templateName: state.templateName,
    signingPublicKeyPem: state.signingPublicKeyPem,
    current: state.current ? strip(state.current) : null,
    previous: state.previous.map(strip),
  };
}
