/**
 * `provline rehearse <csv> --profile <p> [--sample N] [--junit <file>] [--json]`: proves, in a
 * CI job, that a lot would provision, before it reaches the line. On a throwaway stack of its
 * own (a temporary home, free ports, a SoftHSM token, Redis, the AWS IoT stand-in) it lints the
 * user's profile, template and policy, validates the CSV (failing fast with the validator's
 * line-numbered problems), and takes the lot, or an evenly spread sample of it, through submit,
 * the HSM stage, registration by the profile's strategy, a station with simulated devices of
 * the profile's driver, and each device's first connect. The verdict is JSON and JUnit XML; the
 * stack is stopped and removed afterwards, also after a failure or Ctrl-C.
 *
 * What each stage does follows from the strategy module (what the HSM makes, who obtains the
 * certificate, what the bundle carries), so a new strategy is rehearsed without a change here
 * as long as it needs nothing the line cannot simulate. A claim lot also gets its claim made in
 * the token, the fleet template with provline's hook, the hook served beside the stand-in and
 * the lot's allow-list published, as the demo does (src/cli/pipeline/claim-lot.ts); each device
 * then provisions itself through the hook, and the hook's records say what became of it.
 *
 * Exit codes: 0 the lot passes, 4 it fails (the verdict says why), 1 the rehearsal itself could
 * not run (its stack, the HSM) or was interrupted.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { InvalidArgumentError, type Command } from 'commander';
import type { DeviceRecord, Problem } from '../../batch/index.js';
import { validateCsvFile } from '../../batch/index.js';
import { hsmWorkFor, strategyFor, type HsmWork, type Strategy } from '../../batch/strategies/index.js';
import { lintPolicy, makeClients } from '../../cloud/index.js';
import { lintTemplate } from '../../cloud/template/index.js';
import { getProfile, type LoadedConfig, type ResolvedProfile, ConfigSchema } from '../../config/index.js';
import { arnScope, type Named, type ScopeSource, type SerialOutcome } from '../../cloud/index.js';
import { checkClaimProfile, claimPolicyProblems, submitBatch, checkFactoryCa } from '../../jobs/index.js';
import {
  AWS_ACCOUNT,
  AWS_REGION,
  readState,
  stackPaths,
  stackDown,
  stackUp,
  type StandInScope,
} from '../../stack/index.js';
import { ProvlineError, isProvlineError, messageOf, isAlive } from '../../core/index.js';
import { startPtyPair, type DeviceResult, type PtyPair } from '../../flash/index.js';
import { openHsm, type Hsm, caModule as hsmCa } from '../../hsm/index.js';
import type { Runner } from '../../jobs/index.js';
import { CommandContext } from '../context.js';
import { EXIT, ExitCode } from '../exit.js';
import { intOption } from '../options.js';
import { claimOutcomes, prepareClaimLot, startLocalClaim, type LocalClaim } from '../pipeline/claim-lot.js';
import { prepareFactoryCa, prepareProductKeys, runProductLines, type LineRun } from '../pipeline/line.js';
import { openPipeline, startLocalWorkers, type PipelineHandles } from '../pipeline/open.js';
import { deviceRegistrar, stationRegisters } from '../pipeline/registrar.js';
import {
  deviceVerdict,
  junitXml,
  problemLine,
  sampleIndexes,
  verdictOf,
  type Check,
  type DeviceVerdict,
  type Verdict,
} from '../rehearse/verdict.js';
import { waitForRegistration } from './submit.js';
import { activatorConfig, startLocalActivator } from './jitr-activator.js';

interface RehearseOptions {
  profile: string;
  sample?: number;
  junit?: string;
  json?: boolean;
  /** serial → a simulated-device fault planted in that serial's device (a drill). */
  deviceFault: Map<string, string>;
}

/** `--device-fault <serial>=<spec>`, repeatable: the spec as the device simulators take it. */
function deviceFault(
  ctx: () => CommandContext,
): (v: string, previous: Map<string, string>) => Map<string, string> {
  return (v, previous) => {
    const at = v.indexOf('=');
    if (at < 1)
      throw new InvalidArgumentError(
        `--device-fault takes <serial>=<fault spec>, for example SN-0002=impostor, got "${v}"`,
      );
    const spec = v.slice(at + 1);
    const refused = ctx().entries.devices.checkFaults(spec);
    if (refused) throw new InvalidArgumentError(`--device-fault ${v}: ${refused}`);
    return new Map(previous).set(v.slice(0, at), spec);
  };
}

/** Station ports of the rehearsal line (fewer for a smaller lot). */
const PORTS = 2;
/** Problems of one check kept in the verdict (the count says how many in all). */
const PROBLEMS_KEPT = 1000;

export function registerRehearse(program: Command, ctx: () => CommandContext): void {
  program
    .command('rehearse')
    .description(
      "Rehearse a lot on a throwaway stack: lint the profile, template and policy, validate the CSV, then HSM, registration by the profile's strategy, a station with simulated devices and their first connect; verdict as JSON and JUnit",
    )
    .argument('<csv>', 'the lot: a header row with a "serial" column, then one row per device')
    .requiredOption('-p, --profile <name>', 'product profile (yours: --config names the file that adds it)')
    .option(
      '--sample <n>',
      'rehearse an evenly spread sample of n rows (the whole lot when n is larger)',
      intOption('--sample', 1),
    )
    .option('--junit <file>', 'write the verdict as JUnit XML (a test case per check and per serial)')
    .option('--json', 'print the verdict as JSON on stdout')
    .option(
      '--device-fault <serial=spec>',
      "a drill: plant a simulated-device fault in one serial's device (e.g. SN-0002=impostor, see docs/device-protocol.md), to see how the verdict reports it; repeatable",
      deviceFault(ctx),
      new Map<string, string>(),
    )
    .addHelpText(
      'after',
      '\nExit codes: 0 the lot passes, 4 it fails (see the verdict), 1 the rehearsal could not run or was interrupted.\nProgress goes to stderr when it is a terminal.\n',
    )
    .action(async (csv: string, opts: RehearseOptions) => {
      const c = ctx();
      const stop = new AbortController();
      const onSignal = (): void =>
        stop.abort(new ProvlineError('REHEARSAL_FAILED', 'interrupted by a signal'));
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      let verdict: Verdict;
      let broken: boolean;
      try {
        ({ verdict, broken } = await new Rehearsal(c, resolve(csv), opts, stop.signal).run());
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
      if (opts.junit) writeFileSync(opts.junit, junitXml(verdict));
      if (opts.json) c.json(verdict);
      else c.print(summary(verdict));
      if (broken || stop.signal.aborted) throw new ExitCode(EXIT.failed);
      if (verdict.verdict === 'fail') throw new ExitCode(EXIT.partial);
    });
}

/** One rehearsal: its checks as they come, and everything it started, to stop. */
class Rehearsal {
  private readonly checks: Check[] = [];
  private readonly devices: DeviceVerdict[] = [];
  private readonly t0 = performance.now();
  private profile: ResolvedProfile | undefined;
  private strategy: Strategy | undefined;
  /** The account and region the profile's documents name: the stand-in runs as them. */
  private scope: StandInScope = { region: AWS_REGION, account: AWS_ACCOUNT };
  private rows = 0;
  private sample: Array<{ serial: string; line: number }> = [];
  /** The first line of every record of the lot, in order. */
  private starts: number[] = [];
  private broken = false;
  // What it started, stopped in `cleanUp` whatever happened.
  private home: string | undefined;
  private processes: Array<{ pid: number; name: string }> = [];
  private ports: number[] = [];
  private hsm: Hsm | undefined;
  private p: PipelineHandles | undefined;
  private runner: Runner | undefined;
  private pairs: PtyPair[] = [];
  private stopActivator: (() => void) | undefined;
  private activator: Promise<void> | undefined;
  private claim: LocalClaim | undefined;

  constructor(
    private readonly c: CommandContext,
    private readonly csv: string,
    private readonly opts: RehearseOptions,
    private readonly signal: AbortSignal,
  ) {}

  async run(): Promise<{ verdict: Verdict; broken: boolean }> {
    let stopped: boolean;
    try {
      if (this.lint()) await this.validate();
      if (this.opts.deviceFault.size && this.checks.every((x) => x.ok)) this.plantFaults();
      if (this.checks.every((x) => x.ok)) await this.rehearseLot();
      else this.skip(['stack', 'hsm stage', 'registration', 'station', 'first connect']);
    } catch (e) {
      this.broken = true;
      this.check(this.signal.aborted ? 'interrupted' : 'rehearsal', false, this.failureOf(e));
    } finally {
      stopped = await this.cleanUp();
    }
    const verdict: Verdict = {
      verdict: verdictOf(this.checks, this.devices),
      csv: this.csv,
      profile: this.opts.profile,
      strategy: this.strategy?.name ?? '',
      driver: this.profile?.driver ?? '',
      rows: this.rows,
      sampled: this.sample.length,
      checks: this.checks,
      devices: this.devices,
      ...(this.home ? { stack: { processes: this.processes, ports: this.ports, stopped } } : {}),
      elapsedMs: Math.round(performance.now() - this.t0),
    };
    return { verdict, broken: this.broken };
  }

  private progress(text: string): void {
    if (process.stderr.isTTY) process.stderr.write(`==> ${text}\n`);
  }

  private check(name: string, ok: boolean, message: string, extra: Partial<Check> = {}): Check {
    const x: Check = { name, ok, message, ...extra };
    this.checks.push(x);
    return x;
  }

  private skip(names: string[]): void {
    for (const name of names) this.check(name, false, 'not run: an earlier check failed', { skipped: true });
  }

  private failureOf(e: unknown): string {
    if (this.signal.aborted)
      return 'interrupted (SIGINT or SIGTERM): everything the rehearsal started was stopped';
    return isProvlineError(e)
      ? `${e.message} [${e.code}]${e.hint ? `; ${e.hint}` : ''}`
      : `unexpected error: ${messageOf(e)}`;
  }

  /** The profile (with the user's config), its template and its policy. */
  private lint(): boolean {
    this.progress(`lint: profile ${this.opts.profile}, its template and policy`);
    try {
      this.profile = getProfile(this.c.loaded, this.opts.profile);
    } catch (e) {
      const problems = isProvlineError(e)
        ? ((e.details as { problems?: Array<{ path: string; message: string }> } | undefined)?.problems ?? [])
        : [];
      this.check('lint: profile', false, this.failureOf(e), { problems });
      this.skip(['lint: template', 'lint: policy', 'lint: account', 'csv: validation']);
      return false;
    }
    const profile = this.profile;
    this.strategy = strategyFor(profile);
    this.check(
      'lint: profile',
      true,
      `profile ${profile.name} (${profile.source}): strategy ${this.strategy.name}, driver ${profile.driver}, key ${profile.keyType} delivered ${profile.keyDelivery}`,
    );
    const flavor = this.strategy.certificate.templateFlavor;
    const template = readable(profile.templatePath);
    const claim = this.strategy.name === 'claim';
    const templateProblems =
      template.error !== undefined
        ? [{ message: template.error }]
        : claim
          ? claimTemplateProblemsOf(profile)
          : lintTemplate(template.text, flavor).map((t) => ({ path: t.path, message: t.message }));
    this.check(
      'lint: template',
      templateProblems.length === 0,
      templateProblems.length
        ? claim
          ? `the fleet template ${profile.templatePath} cannot serve the claim [CLAIM_TEMPLATE_INVALID]: ${oneOf(templateProblems)}`
          : `the provisioning template ${profile.templatePath} has ${templateProblems.length} problem(s) for ${flavor} registration`
        : claim
          ? `the fleet template ${profile.templatePath} is sound for fleet provisioning and declares the serial parameter ${profile.claim!.serialParameter}, the lot parameter ${profile.claim!.lotParameter} and every parameter the hook sets (${Object.keys(profile.parameters).join(', ')})`
          : `the provisioning template ${profile.templatePath} is sound for ${flavor} registration`,
      templateProblems.length ? { problems: templateProblems } : {},
    );
    if (profile.policyPath) {
      const policy = readable(profile.policyPath);
      const policyProblems = policy.error !== undefined ? [policy.error] : lintPolicy(policy.text);
      this.check(
        'lint: policy',
        policyProblems.length === 0,
        policyProblems.length
          ? `the device policy ${profile.policyPath} has ${policyProblems.length} problem(s)`
          : `the device policy ${profile.policyPath} is well formed (the devices' first connect puts it to work)`,
        policyProblems.length ? { problems: policyProblems.map((message) => ({ message })) } : {},
      );
    } else
      this.check('lint: policy', true, `no policy document: the template names policy ${profile.policyName}`);
    const scoped = this.lintAccount(profile);
    if (claim) {
      if (scoped) this.lintClaimPolicy(profile);
      else this.skip(['lint: claim policy']);
    }
    return true;
  }

  /**
   * The account and region the profile's template, policies and hook name (ARNs with a
   * concrete region or account): the stand-in is started as them, so the user's documents,
   * written for their real account, are judged as AWS would judge them. Two accounts (or two
   * regions) fail here, naming both and where each is written.
   */
  private lintAccount(profile: ResolvedProfile): boolean {
    const sources: ScopeSource[] = [];
    for (const path of [profile.templatePath, profile.policyPath, profile.claimPolicyPath]) {
      const text = path ? readable(path).text : undefined;
      if (path && text !== undefined) sources.push({ source: path, text });
    }
    if (profile.claim) sources.push({ source: 'claim.hookArn', text: profile.claim.hookArn });
    const found = arnScope(sources);
    if (found.conflicts.length) {
      this.check(
        'lint: account',
        false,
        `the profile's documents are not for one account and region [PROFILE_ACCOUNTS_DIFFER]: ${oneOf(found.conflicts.map((message) => ({ message })))}`,
        { problems: found.conflicts.map((message) => ({ message })) },
      );
      return false;
    }
    const [account] = found.accounts;
    const [region] = found.regions;
    this.scope = { region: region?.value ?? AWS_REGION, account: account?.value ?? AWS_ACCOUNT };
    const where = (n: Named | undefined): string => (n ? ` (${n.sources.join(', ')})` : '');
    const same = account && region && account.sources.join() === region.sources.join();
    const named = same
      ? `account ${account.value} in ${region.value}${where(account)}`
      : `${account ? `account ${account.value}${where(account)}` : 'no account'} and ${region ? `region ${region.value}${where(region)}` : 'no region'}`;
    this.check(
      'lint: account',
      true,
      `the profile names ${named}: the stand-in runs as account ${this.scope.account} in ${this.scope.region}${account && region ? '' : ' (its own where the profile names none)'}`,
    );
    return true;
  }

  /**
   * A claim profile's claim policy (its own `claim.policy`, or the generated one) against the
   * whole fleet exchange, in the account and region the profile names (where the rehearsal runs it):
   * connect as a thing name, publish both requests, subscribe to and receive both answers.
   */
  private lintClaimPolicy(profile: ResolvedProfile): void {
    const what = profile.claimPolicyPath
      ? `the claim policy ${profile.claimPolicyPath}`
      : `the generated least-privilege claim policy for template ${profile.claim!.templateName}`;
    let gaps: string[];
    try {
      gaps = claimPolicyProblems(profile, this.scope);
    } catch (e) {
      gaps = [this.failureOf(e)];
    }
    this.check(
      'lint: claim policy',
      gaps.length === 0,
      gaps.length
        ? `${what} would not let a device provision itself [CLAIM_POLICY_INVALID]: it lacks ${oneOf(gaps.map((message) => ({ message })))}`
        : `${what} lets a device do the whole fleet exchange (connect as its thing name, publish both requests, subscribe to and receive both answers)`,
      gaps.length ? { problems: gaps.map((message) => ({ message })) } : {},
    );
  }

  /** The whole CSV through the validator, with its line numbers; then the sample. */
  private async validate(): Promise<void> {
    this.progress(`validate ${this.csv}`);
    const rows: Array<{ serial: string; line: number }> = [];
    const t = performance.now();
    const intake = await validateCsvFile(this.csv, this.profile!, {
      maxProblems: PROBLEMS_KEPT,
      onRow: (r) => void rows.push({ serial: r.serial, line: r.line }),
    });
    this.rows = intake.rows;
    const ms = Math.round(performance.now() - t);
    if (!intake.valid) {
      this.check(
        'csv: validation',
        false,
        `${basename(this.csv)}: ${intake.problemCount} problem${intake.problemCount === 1 ? '' : 's'} in ${intake.rows} rows (profile ${this.profile!.name}); nothing was rehearsed`,
        { problems: intake.problems satisfies Problem[], ms },
      );
      return;
    }
    this.starts = rows.map((r) => r.line);
    this.sample = sampleIndexes(rows.length, this.opts.sample).map((i) => rows[i]!);
    this.check(
      'csv: validation',
      true,
      `${basename(this.csv)}: ${intake.rows} valid rows${this.sample.length < rows.length ? `; an evenly spread sample of ${this.sample.length} is rehearsed` : ''}`,
      { ms },
    );
  }

  /** `--device-fault`: every serial it names must be in the sample; the verdict says what was planted. */
  private plantFaults(): void {
    const sampled = new Set(this.sample.map((s) => s.serial));
    const planted = [...this.opts.deviceFault];
    const outside = planted.filter(([serial]) => !sampled.has(serial)).map(([serial]) => serial);
    this.check(
      'device faults',
      outside.length === 0,
      outside.length
        ? `--device-fault names ${outside.join(', ')}, not in the rehearsed ${this.sample.length < this.rows ? 'sample' : 'lot'}`
        : `a drill: planted in the simulated devices of ${planted.map(([serial, spec]) => `${serial} (${spec})`).join(', ')}`,
    );
  }

  /** The sample through every stage on a throwaway stack. */
  private async rehearseLot(): Promise<void> {
    const profile = this.profile!;
    const strategy = this.strategy!;
    // The stack: a home of its own, free ports; nothing of the user's configured services.
    let t = performance.now();
    this.progress(
      `stack: a throwaway home with Redis, a SoftHSM token and the AWS IoT stand-in as account ${this.scope.account} in ${this.scope.region}`,
    );
    this.home = mkdtempSync(join(tmpdir(), 'provline-rehearse-'));
    const status = await stackUp(this.home, this.scope);
    if (status.redis.pid) this.processes.push({ pid: status.redis.pid, name: 'redis-server' });
    if (status.aws.pid) this.processes.push({ pid: status.aws.pid, name: 'workers/emulator.js' });
    const state = readState(stackPaths(this.home));
    this.ports = [state.redisPort, state.aws?.port, state.aws?.s3Port, state.aws?.mqttPort].filter(
      (x): x is number => typeof x === 'number',
    );
    this.check(
      'stack',
      true,
      `redis, SoftHSM token and AWS IoT stand-in (account ${this.scope.account}, ${this.scope.region}) on ports ${this.ports.join(', ')}`,
      {
        ms: Math.round(performance.now() - t),
      },
    );
    this.signal.throwIfAborted();
    const ic = isolatedContext(this.c, this.home, this.scope.region);
    this.hsm = await openHsm(await ic.hsmSettings(), { env: ic.env });
    const kek = await prepareProductKeys(this.hsm, profile, join(this.home, 'device-kek.bin'));
    this.p = await openPipeline(ic);
    // A strategy whose certificates a factory CA signs: the CA made in the token and registered
    // with the stand-in (with the profile's template), as `provline ca create` and `register` do.
    if (strategy.certificate.by === 'factory-ca') {
      this.progress(`factory CA "${profile.ca?.label ?? ''}" in the HSM, registered with the stand-in`);
      await prepareFactoryCa(ic, this.hsm, profile);
      // JITR: the activator beside the stand-in, as `provline jitr-activator` runs it.
      if (strategy.certificate.call === 'jit-activator') {
        const view = await hsmCa.describeCa(this.hsm, profile.ca!, new Date());
        const stop = new Promise<string>((resolve) => (this.stopActivator = () => resolve('rehearsal over')));
        const started = await startLocalActivator(
          ic,
          profile,
          activatorConfig(profile, [view.certificatePem]),
          {
            write: () => undefined,
            stop,
          },
        );
        this.activator = started.done;
      }
    }
    // A claim lot: the claim made in the token, the fleet template with provline's hook, and
    // the hook served beside the stand-in (as `claim create` and `claim hook serve` do).
    if (strategy.name === 'claim') {
      this.progress(`claim for ${profile.name}: key in the HSM, fleet template with provline's hook`);
      this.claim = await startLocalClaim(ic, this.p, this.hsm, profile);
      this.ports.push(Number(new URL(this.claim.hook.url).port));
    }

    // The lot (or its sample) submitted as the user would, then the HSM stage and registration.
    t = performance.now();
    const csv = this.sampledCsv();
    const hsm = this.hsm;
    const claimLot = this.claim ? await prepareClaimLot(ic, this.p, profile, csv, hsm) : undefined;
    let published: { count: number } | undefined;
    const submitted = await submitBatch(
      {
        ...this.p,
        checkFactoryCa: async (name, preflight) => {
          const cloud = makeClients(ic.runtime.aws);
          try {
            return await checkFactoryCa({ hsm, cloud }, name, preflight, new Date());
          } finally {
            cloud.destroy();
          }
        },
      },
      { csvPath: csv, profile, hsmChunk: ic.loaded.config.workers.hsmChunk },
    )
      .then(async (r) => {
        // The claim lot's allow-list, where the hook reads it (as `submit` publishes it).
        if (claimLot && r.status === 'submitted') published = await claimLot.publish(r.batchId);
        return r;
      })
      .finally(() => claimLot?.close());
    if (submitted.status !== 'submitted')
      throw new ProvlineError('REHEARSAL_FAILED', `the lot was not submitted (${submitted.status})`);
    this.progress(
      `submitted batch ${submitted.batchId}: ${submitted.accepted} devices; HSM stage and registration`,
    );
    // Work before the station (keys in the HSM, certificates by the registrar), where the
    // strategy has any: the workers run in this process until it is done.
    let aborted: string | undefined;
    const hsmWork = hsmWorkFor(strategy, profile.keyDelivery);
    if (hsmWork !== 'nothing' || strategy.certificate.by === 'registrar') {
      this.runner = await startLocalWorkers(ic, this.p);
      const reg = await waitForRegistration(this.p, submitted.batchId, process.stderr.isTTY, this.signal);
      await this.runner.close();
      this.runner = undefined;
      if (reg.aborted) aborted = `${reg.aborted.message} [${reg.aborted.code}]`;
    }
    const ms = Math.round(performance.now() - t);
    const before = await this.records();
    this.stageChecks(strategy, hsmWork, before, ms, aborted, published?.count);
    this.signal.throwIfAborted();

    // The line: a station over pty pairs, simulated devices of the profile's driver.
    const ready = this.sample.filter((s) => before.get(s.serial)?.state !== 'failed');
    let run: LineRun = { results: [], seen: new Map() };
    t = performance.now();
    if (ready.length) {
      const ports = Math.min(PORTS, ready.length);
      for (let i = 0; i < ports; i++) this.pairs.push(await startPtyPair(this.home, `port${i + 1}`));
      this.processes.push(...this.pairs.map((x) => ({ pid: x.pid, name: 'socat' })));
      this.progress(`station: ${ready.length} simulated ${profile.driver} device(s) over ${ports} port(s)`);
      run = await runProductLines(
        this.p,
        [
          {
            profile,
            serials: ready.map((s) => s.serial),
            ports: this.pairs,
            ...(kek ? { kek } : {}),
            ...(this.opts.deviceFault.size ? { faults: this.opts.deviceFault } : {}),
            ...(stationRegisters(profile)
              ? {
                  register: await deviceRegistrar(
                    ic,
                    this.p.redis,
                    this.p.journal,
                    this.p.batches,
                    profile,
                    () => Promise.resolve(this.hsm!),
                  ),
                }
              : {}),
          },
        ],
        this.hsm,
        {
          stationId: 'rehearse',
          devices: ic.entries.devices,
          iotEndpoint: status.aws.endpoint,
          signal: this.signal,
          onResult: (r) =>
            this.progress(
              `  ${r.serial}: ${r.outcome}${r.connected ? ', connected' : ''}${r.code ? ` [${r.code}]` : ''} in ${r.ms} ms`,
            ),
        },
      );
    }
    this.signal.throwIfAborted();
    // A claim lot: what the hook made of each serial (provisioned, denied and why, not seen).
    const outcomes = this.claim ? await claimOutcomes(ic, this.p, submitted.batchId) : undefined;
    this.lineChecks(await this.records(), run, Math.round(performance.now() - t), outcomes);
  }

  /** The CSV to submit: the user's file, or its sampled records (header and records copied as written). */
  private sampledCsv(): string {
    if (this.sample.length === this.rows) return this.csv;
    const text = readFileSync(this.csv, 'utf8');
    const lines = text.split('\n');
    // A record runs from its first line to the line before the next record (quoted line breaks).
    const starts = new Set(this.sample.map((s) => s.line));
    const out = [lines[0]!];
    const all = this.starts;
    for (const [i, start] of all.entries()) {
      if (!starts.has(start)) continue;
      const end = all[i + 1] ?? lines.length + 1;
      out.push(...lines.slice(start - 1, end - 1).filter((l) => l.trim() !== ''));
    }
    const file = join(this.home!, `sample-${basename(this.csv)}`);
    writeFileSync(file, `${out.join('\n')}\n`);
    return file;
  }

  private async records(): Promise<Map<string, DeviceRecord>> {
    const recs = await this.p!.journal.getMany(this.sample.map((s) => s.serial));
    return new Map(recs.flatMap((r) => (r ? [[r.serial, r] as const] : [])));
  }

  /** The HSM stage and registration, as the strategy divides the work. */
  private stageChecks(
    strategy: Strategy,
    hsmWork: HsmWork,
    recs: Map<string, DeviceRecord>,
    ms: number,
    aborted?: string,
    /** Serials in the claim lot's published allow-list. */
    allowed?: number,
  ): void {
    const failedAt = (stages: string[]): DeviceRecord[] =>
      [...recs.values()].filter((r) => r.state === 'failed' && stages.includes(r.error?.stage ?? ''));
    const codes = (rs: DeviceRecord[]): string =>
      [...new Set(rs.map((r) => r.error?.code ?? 'UNKNOWN'))].join(', ');
    if (hsmWork === 'nothing')
      this.check(
        'hsm stage',
        true,
        this.claim
          ? `the claim key and the allow-list signing key made in the SoftHSM token (nothing per serial: with strategy ${strategy.name} each device makes its own key)`
          : `nothing to make in the HSM: with strategy ${strategy.name} each device makes its own key`,
      );
    else {
      const bad = failedAt(['hsm']);
      this.check(
        'hsm stage',
        bad.length === 0 && !aborted,
        aborted ??
          (bad.length
            ? `${bad.length} device(s) failed in the HSM stage (${codes(bad)})`
            : `${recs.size} key pairs ${strategy.hsm === 'key-and-certificate' ? 'and certificates signed by the factory CA' : 'and CSRs'} made in the SoftHSM token`),
        { ms },
      );
    }
    const { certificate } = strategy;
    const bad = [...recs.values()].filter((r) => r.state === 'failed');
    const before = bad.length
      ? `${bad.length} device(s) failed before the station (${codes(bad)})`
      : undefined;
    switch (certificate.by) {
      case 'registrar': {
        const registered = [...recs.values()].filter((r) => r.at.registered !== undefined).length;
        this.check(
          'registration',
          !bad.length && !aborted,
          aborted ??
            before ??
            `${registered} device(s) registered on the stand-in by ${certificate.call} with the user's template`,
          { ms },
        );
        break;
      }
      case 'station':
        this.check(
          'registration',
          !aborted,
          aborted ??
            `with strategy ${strategy.name} the station registers each device (${certificate.call}) with the user's template: checked per device below`,
        );
        break;
      case 'device': {
        const claim = this.claim?.state;
        this.check(
          'registration',
          !bad.length && !aborted && claim !== undefined && allowed === recs.size,
          aborted ??
            before ??
            (claim
              ? `claim ${claim.current?.certificateId.slice(0, 12) ?? ''}… made with its policy, fleet template ${claim.templateName} with provline's hook, the allow-list of ${allowed ?? 0} of ${recs.size} serial(s) published: each device registers itself through the hook at its first connect (${certificate.call}), checked per device below`
              : `strategy ${strategy.name}: no claim was set up on the throwaway stack`),
          { ms },
        );
        break;
      }
      case 'factory-ca':
        this.check(
          'registration',
          !bad.length && !aborted,
          aborted ??
            before ??
            `with strategy ${strategy.name} AWS registers each certificate at the device's first connect (${certificate.call}): checked per device below`,
        );
        break;
    }
  }

  /** The station's work and the first connect, per check and per serial. */
  private lineChecks(
    recs: Map<string, DeviceRecord>,
    run: LineRun,
    ms: number,
    claimOf?: (serial: string, clientId?: string) => SerialOutcome,
  ): void {
    const profile = this.profile!;
    const wantsConnect = profile.station.firstConnect !== false;
    const results = new Map<string, DeviceResult>();
    for (const r of run.results) results.set(r.serial, r);
    for (const s of this.sample)
      this.devices.push(
        deviceVerdict({
          ...s,
          wantsConnect,
          record: recs.get(s.serial),
          result: results.get(s.serial),
          seen: run.seen.has(s.serial),
          // Its device connects to the hook with its thing name as client id.
          claim: claimOf?.(s.serial, recs.get(s.serial)?.thingName),
        }),
      );
    const verified = this.devices.filter((d) => ['verified', 'connected'].includes(d.state)).length;
    const n = this.sample.length;
    this.check(
      'station',
      verified === n,
      `${verified} of ${n} device(s) written and verified by their own answers (${profile.driver})`,
      { ms },
    );
    if (wantsConnect) {
      const connected = this.devices.filter((d) => d.connected).length;
      this.check(
        'first connect',
        connected === n,
        `${connected} of ${n} device(s) connected to the stand-in's MQTT endpoint as their things, seen in its events log`,
      );
    } else this.check('first connect', true, 'not asked: the profile sets station.firstConnect false');
  }

  /** Stops everything started, in reverse; true when its processes are gone. */
  private async cleanUp(): Promise<boolean> {
    const quietly = async (f: () => unknown): Promise<void> => {
      try {
        await f();
      } catch {
        // Cleaning up goes on whatever one step says.
      }
    };
    await quietly(() => this.runner?.close());
    await quietly(() => this.claim?.close());
    this.stopActivator?.();
    await quietly(() => this.activator);
    this.hsm?.close();
    await quietly(() => this.p?.close());
    for (const pair of this.pairs) await quietly(() => pair.stop());
    if (!this.home) return true;
    await quietly(() => stackDown(this.home!));
    // By pid and name: a pid reused since, or an exited child not yet reaped, is not ours running.
    const stopped = this.processes.every((x) => !isAlive(x.pid, x.name));
    rmSync(this.home, { recursive: true, force: true });
    return stopped;
  }
}

/**
 * A context on the throwaway stack: the user's profiles and worker settings, but the home, the
 * HSM and the cloud of the stack (never the user's configured Redis, HSM or AWS account), and
 * no PIN or SoftHSM configuration from the environment. Its clients sign for `region`, the
 * stand-in's.
 */
function isolatedContext(c: CommandContext, home: string, region: string): CommandContext {
  const defaults = ConfigSchema.parse({});
  const user = c.loaded;
  const loaded: LoadedConfig = {
    ...user,
    home,
    config: {
      ...user.config,
      home,
      redis: { prefix: user.config.redis.prefix },
      hsm: defaults.hsm,
      aws: { ...defaults.aws, region },
    },
  };
  const env = { ...c.env };
  delete env.SOFTHSM2_CONF;
  delete env[user.config.hsm.pinEnv];
  delete env[defaults.hsm.pinEnv];
  // The stages' own warnings (a registrar yielding a chunk) are noise in a CI log; the verdict
  // says what matters. PROVLINE_LOG_LEVEL still shows them.
  env.PROVLINE_LOG_LEVEL ??= 'error';
  return new CommandContext({ home }, c.out, env, loaded, c.entries);
}

/** A claim profile's fleet template against what the hook sets and the devices send. */
function claimTemplateProblemsOf(profile: ResolvedProfile): Array<{ message: string }> {
  try {
    checkClaimProfile(profile);
    return [];
  } catch (e) {
    const listed = isProvlineError(e)
      ? (e.details as { problems?: string[] } | undefined)?.problems
      : undefined;
    return (listed ?? [messageOf(e)]).map((message) => ({ message }));
  }
}

/** The first of a check's problems on one line, and how many more there are. */
function oneOf(problems: ReadonlyArray<{ message: string }>): string {
  const more = problems.length - 1;
  return `${problems[0]?.message ?? ''}${more > 0 ? ` (and ${more} more)` : ''}`;
}

function readable(path: string): { text: string; error?: undefined } | { text?: undefined; error: string } {
  try {
    return { text: readFileSync(path, 'utf8') };
  } catch (e) {
    return { error: `cannot read ${path}: ${messageOf(e)}` };
  }
}

/** The verdict for a terminal or a log: every check, and each serial that failed. */
function summary(v: Verdict): string {
  const lines = [
    `rehearse ${v.csv} with profile ${v.profile}${v.strategy ? ` (strategy ${v.strategy}, driver ${v.driver})` : ''}: ${v.verdict === 'pass' ? 'PASS' : 'FAIL'} in ${(v.elapsedMs / 1000).toFixed(1)} s`,
  ];
  for (const x of v.checks) {
    lines.push(`  ${x.ok ? 'ok  ' : x.skipped ? 'skip' : 'FAIL'}  ${x.name}: ${x.message}`);
    for (const p of (x.problems ?? []).slice(0, 20)) lines.push(`          ${problemLine(p)}`);
    if ((x.problems?.length ?? 0) > 20)
      lines.push(`          … and ${x.problems!.length - 20} more (--json)`);
  }
  if (v.devices.length) {
    const ok = v.devices.filter((d) => d.ok).length;
    lines.push(`  devices: ${ok} of ${v.devices.length} passed`);
    for (const d of v.devices.filter((x) => !x.ok))
      lines.push(`    ${d.serial} (line ${d.line}): ${d.state} [${d.code ?? ''}] ${d.message}`);
  }
  return lines.join('\n');
}
