/**
 * Submitting a batch: validate every row, refuse serials other batches hold, build the plan,
 * record the devices as accepted and enqueue the work, in memory bounded whatever the lot's
 * size: the CSV is read once, its valid rows go to Redis as plan pages while it is read (and
 * are checked against other batches a page at a time); only once the whole file has been
 * read and checked is the batch recorded, so a refused batch leaves no trace (its staged
 * pages are removed). The devices are then accepted from the stored pages, page by page.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import {
  validateCsvFile,
  type IntakeResult,
  buildPlanHeader,
  planDevice,
  PLAN_PAGE,
  type PlanDevice,
  type PlanHeader,
} from '../batch/index.js';
import type { Problem } from '../batch/index.js';
import { strategyFor } from '../batch/strategies/index.js';
import { lintProfileTemplate } from '../cloud/template/index.js';
import type { ResolvedProfile, StrategyName } from '../config/index.js';
import { messageOf, ProvlineError } from '../core/index.js';
import type { BatchStore } from './batches.js';
import type { CaPreflight, CaPreflightProfile } from './ca-preflight.js';
import { jitpRowProblems, parseJitpTemplate, type JitpRowProblem } from './jitp-rows.js';
import { alreadySubmitted, type Journal } from './journal.js';
import type { PipelineQueues } from './queues.js';

export interface SubmitRequest {
  csvPath: string;
  profile: ResolvedProfile;
  skipInvalid?: boolean;
  skipExisting?: boolean;
  hsmChunk: number;
  now?: () => Date;
  /** Injectable for tests; default `b<yyyymmdd>-<hhmmss>-<6 hex>`. */
  batchId?: string;
}

export type SubmitResult =
  | { status: 'invalid'; intake: IntakeResult }
  | { status: 'nothing-to-do'; rows: number; skipped: string[]; rejected: number }
  | {
      status: 'submitted';
      batchId: string;
      plan: PlanHeader;
      rows: number;
      accepted: number;
      skipped: string[];
      retried: string[];
      rejected: number;
      hsmJobs: number;
    };

export interface SubmitDeps {
  journal: Journal;
  batches: BatchStore;
  queues: PipelineQueues;
  /**
   * The factory-CA check of a jitp or jitr lot (ca-preflight.ts, with the HSM and the cloud):
   * run before any row is read, so a lot whose CA cannot sign or provision queues nothing.
   */
  checkFactoryCa?: (strategy: StrategyName, profile: CaPreflightProfile) => Promise<CaPreflight>;
}

/** Serials held by other batches that are listed by name (the rest are only counted). */
const LISTED = 20;

export function newBatchId(now: Date): string {
  const iso = now.toISOString();
  const stamp = `${iso.slice(0, 10).replaceAll('-', '')}-${iso.slice(11, 19).replaceAll(':', '')}`;
  return `b${stamp}-${randomBytes(3).toString('hex')}`;
}

/** A profile's file (template, policy) as text; unreadable is the operator's input error. */
export function readText(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    throw new ProvlineError('INPUT_UNREADABLE', `cannot read the ${what} ${path}: ${messageOf(e)}`, {
      kind: 'invalid-input',
      cause: e,
    });
  }
}

function jitpRowsRefused(profile: string, listed: JitpRowProblem[], count: number): ProvlineError {
  const lines = listed.map(
    (p) =>
      `  line ${p.line} (serial ${p.serial}): ${p.field}${p.value ? ` = "${p.value}"` : ''}: ${p.message}`,
  );
  if (count > listed.length) lines.push(`  … and ${count - listed.length} more`);
  return new ProvlineError(
    'JITP_SUBJECT_INVALID',
    `profile ${profile}: ${count} problem${count === 1 ? '' : 's'} AWS would meet at the devices' first connect (their certificates would stay PENDING_ACTIVATION); nothing was signed or queued:\n${lines.join('\n')}`,
    {
      kind: 'invalid-input',
      hint: "The values come from the certificate subject: CN is the thing name, the rest is the profile's csrSubject. Change them, or the template.",
      details: { problems: listed, count },
    },
  );
}

async function preflightCa(deps: SubmitDeps, profile: ResolvedProfile): Promise<CaPreflight | undefined> {
  const strategy = strategyFor(profile);
  if (strategy.certificate.by !== 'factory-ca') return undefined;
  if (!profile.ca)
    throw new ProvlineError(
      'CA_NOT_CONFIGURED',
      `profile ${profile.name}: strategy ${strategy.name} needs a factory CA (\`ca\`)`,
      {
        kind: 'invalid-input',
      },
    );
  if (!deps.checkFactoryCa)
    throw new ProvlineError(
      'CA_NOT_CONFIGURED',
      `profile ${profile.name}: strategy ${strategy.name} signs with the factory CA in the HSM, and this submit cannot reach the HSM to check it`,
      { kind: 'invalid-input', hint: 'Submit from a host with the HSM (its PIN file or PROVLINE_HSM_PIN).' },
    );
  return deps.checkFactoryCa(strategy.name, {
    name: profile.name,
    ca: profile.ca,
    csrSubject: profile.csrSubject,
  });
}

export async function submitBatch(deps: SubmitDeps, req: SubmitRequest): Promise<SubmitResult> {
  const now = (req.now ?? (() => new Date()))();
  const { profile } = req;
  const templateBody = readText(profile.templatePath, 'provisioning template');
  const flavor = strategyFor(profile).certificate.templateFlavor;
  const problems = lintProfileTemplate(templateBody, flavor, profile);
  if (problems.length)
    throw new ProvlineError(
      'TEMPLATE_INVALID',
      `profile ${profile.name}: the provisioning template ${profile.templatePath} is invalid: ${problems
        .map((p) => p.message)
        .join('; ')}`,
      {
        kind: 'invalid-input',
        hint: 'Fix the template; `provline validate` checks rows, this checks the template.',
      },
    );
  const policyDocument = profile.policyPath ? readText(profile.policyPath, 'device policy') : undefined;
  const factoryCa = await preflightCa(deps, profile);
  const batchId = req.batchId ?? newBatchId(now);
  const skipExisting = req.skipExisting ?? false;

  // Read once: valid rows become plan pages in Redis as they come (checked against other
  // batches a page at a time); rejected rows keep their own serial for the report.
  const refused: Array<{ serial: string; batch: string; state: string }> = [];
  let refusedCount = 0;
  const refusedSerials: string[] = [];
  let kept = 0;
  let page: PlanDevice[] = [];
  const rejectedSerials = new Map<number, string | null>();
  // A JITP lot: each row tried against the CA's template as AWS will at the first connect.
  const jitp =
    strategyFor(profile).certificate.call === 'jit-template' ? parseJitpTemplate(templateBody) : undefined;
  const jitpProblems: JitpRowProblem[] = [];
  let jitpProblemCount = 0;
  const flush = async (): Promise<void> => {
    const rows = page;
    page = [];
    if (!rows.length) return;
    const existing = await deps.journal.existing(
      batchId,
      rows.map((d) => d.serial),
    );
    // A serial that failed elsewhere before it got a certificate is simply retried here.
    const held = existing.filter((e) => !(e.state === 'failed' && !e.hasCertificate));
    refusedCount += held.length;
    for (const h of held) {
      if (refused.length < LISTED) refused.push(h);
      if (skipExisting) refusedSerials.push(h.serial);
    }
    if (held.length && !skipExisting) return; // refused: nothing more needs staging
    const heldSet = new Set(held.map((h) => h.serial));
    const stay = heldSet.size ? rows.filter((d) => !heldSet.has(d.serial)) : rows;
    kept += stay.length;
    await deps.batches.stagePage(batchId, stay);
  };
  let intake: IntakeResult;
  try {
    intake = await validateCsvFile(req.csvPath, profile, {
      maxProblems: req.skipInvalid ? 1_000_000 : 1000,
      sha256: true,
      onRow: (r) => {
        const d = planDevice(r);
        if (jitp) {
          const found = jitpRowProblems(jitp, d, profile.csrSubject);
          jitpProblemCount += found.length;
          for (const pr of found) if (jitpProblems.length < LISTED) jitpProblems.push(pr);
        }
        page.push(d);
        return page.length >= PLAN_PAGE ? flush() : undefined;
      },
      onReject: (line, serial) => {
        if (req.skipInvalid) rejectedSerials.set(line, serial);
      },
    });
    await flush();
  } catch (e) {
    await deps.batches.discardStaged(batchId);
    throw e;
  }
  if (jitpProblemCount) {
    await deps.batches.discardStaged(batchId);
    throw jitpRowsRefused(profile.name, jitpProblems, jitpProblemCount);
  }
  const headerBroken = intake.problems.some((p) => p.line === 1);
  if ((!intake.valid && !req.skipInvalid) || headerBroken) {
    await deps.batches.discardStaged(batchId);
    return { status: 'invalid', intake };
  }
  const rejected: Problem[] = intake.valid ? [] : intake.problems.filter((p) => p.line > 1);
  const rejectedLines = new Set(rejected.map((p) => p.line)).size;
  if (refusedCount && !skipExisting) {
    await deps.batches.discardStaged(batchId);
    throw alreadySubmitted(refused, refusedCount);
  }
  if (!kept) {
    await deps.batches.discardStaged(batchId);
    return { status: 'nothing-to-do', rows: intake.rows, skipped: refusedSerials, rejected: rejectedLines };
  }

  const plan = buildPlanHeader({
    batchId,
    now,
    profile,
    templateBody,
    ...(policyDocument === undefined ? {} : { policyDocument }),
    source: { file: basename(req.csvPath), sha256: intake.sha256!, rows: intake.rows },
    deviceCount: kept,
    rejected,
    rejectedSerials,
  });
  await deps.batches.createFromHeader(plan, now.getTime());
  if (factoryCa) await deps.batches.set(batchId, { caCertificateId: factoryCa.caCertificateId });
  // Accepted from the stored pages, a page at a time, in plan order.
  let accepted = 0;
  const skipped = [...refusedSerials];
  const retried: string[] = [];
  for await (const devices of deps.batches.planPages(batchId)) {
    const acc = await deps.journal.accept(
      batchId,
      devices.map((d) => ({ serial: d.serial, thingName: d.thingName, line: d.line })),
      { skipExisting },
    );
    accepted += acc.accepted;
    skipped.push(...acc.skipped);
    retried.push(...acc.retried);
  }
  const { hsmJobs } = await deps.queues.enqueueBatch(plan, req.hsmChunk);
  return {
    status: 'submitted',
    batchId,
    plan,
    rows: intake.rows,
    accepted,
    skipped,
    retried,
    rejected: rejectedLines,
    hsmJobs,
  };
}
