/**
 * Submitting a batch: validate every row, refuse serials other batches hold, build the plan,
 * record the devices as accepted and enqueue the work. Nothing is written to Redis until the
 * whole file has been read and checked, so a refused batch leaves no trace.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { validateCsvFile, type IntakeResult } from '../batch/intake.js';
import { buildPlan, sha256, type BatchPlan } from '../batch/plan.js';
import type { IntakeRow, Problem } from '../batch/rules.js';
import { lintTemplate } from '../cloud/template/index.js';
import type { ResolvedProfile } from '../config/load.js';
import { messageOf, ProvlineError } from '../core/errors.js';
import type { BatchStore } from './batches.js';
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
      plan: BatchPlan;
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
}

export function newBatchId(now: Date): string {
  const iso = now.toISOString();
  const stamp = `${iso.slice(0, 10).replaceAll('-', '')}-${iso.slice(11, 19).replaceAll(':', '')}`;
  return `b${stamp}-${randomBytes(3).toString('hex')}`;
}

function readText(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    throw new ProvlineError('INPUT_UNREADABLE', `cannot read the ${what} ${path}: ${messageOf(e)}`, {
      kind: 'invalid-input',
      cause: e,
    });
  }
}

export async function submitBatch(deps: SubmitDeps, req: SubmitRequest): Promise<SubmitResult> {
  const now = (req.now ?? (() => new Date()))();
  const { profile } = req;
  const templateBody = readText(profile.templatePath, 'provisioning template');
  const flavor = profile.registration.mode === 'bulk' ? 'bulk' : 'register-thing';
  const problems = lintTemplate(templateBody, flavor);
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

  const rows: IntakeRow[] = [];
  const intake = await validateCsvFile(req.csvPath, profile, {
    maxProblems: req.skipInvalid ? 1_000_000 : 1000,
    onRow: (r) => rows.push(r),
  });
  if (!intake.valid && !req.skipInvalid) return { status: 'invalid', intake };
  const rejected: Problem[] = intake.valid ? [] : intake.problems.filter((p) => p.line > 1);
  const headerBroken = intake.problems.some((p) => p.line === 1);
  if (headerBroken) return { status: 'invalid', intake };
  const rejectedLines = new Set(rejected.map((p) => p.line)).size;

  const batchId = req.batchId ?? newBatchId(now);
  const existing = await deps.journal.existing(
    batchId,
    rows.map((r) => r.serial),
  );
  // A serial that failed elsewhere before it got a certificate is simply retried here.
  const refused = existing.filter((e) => !(e.state === 'failed' && !e.hasCertificate));
  if (refused.length && !req.skipExisting) throw alreadySubmitted(refused);
  const refusedSet = new Set(refused.map((e) => e.serial));
  const kept = refused.length ? rows.filter((r) => !refusedSet.has(r.serial)) : rows;
  if (!kept.length)
    return { status: 'nothing-to-do', rows: intake.rows, skipped: [...refusedSet], rejected: rejectedLines };

  const plan = buildPlan({
    batchId,
    now,
    profile,
    templateBody,
    ...(policyDocument === undefined ? {} : { policyDocument }),
    source: { file: basename(req.csvPath), sha256: sha256(readFileSync(req.csvPath)), rows: intake.rows },
    rows: kept,
    rejected,
  });
  await deps.batches.create(plan, now.getTime());
  const acc = await deps.journal.accept(
    batchId,
    kept.map((r) => ({ serial: r.serial, thingName: r.thingName, line: r.line })),
    { skipExisting: req.skipExisting ?? false },
  );
  const { hsmJobs } = await deps.queues.enqueueBatch(plan, req.hsmChunk);
  return {
    status: 'submitted',
    batchId,
    plan,
    rows: intake.rows,
    accepted: acc.accepted,
    skipped: [...refusedSet, ...acc.skipped],
    retried: acc.retried,
    rejected: rejectedLines,
    hsmJobs,
  };
}
