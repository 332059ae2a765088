/**
 * Bulk registration (StartThingRegistrationTask family, aws-iot.md §1): one task at a time,
 * run asynchronously by BulkRunner, resumable after a crash.
 *
 * Crash safety: lines are processed in chunks; each chunk's side effects, the task's progress
 * (offset, counts) and the lengths of the local report journals are committed as ONE store
 * transaction, after the chunk's report lines were appended to the journals. At start, every
 * InProgress task is resumed: journals are cut back to the committed lengths and processing
 * continues at the committed offset, so each line is applied exactly once.
 */
import {
  closeSync,
  mkdirSync,
  openSync,
  readFileSync,
  rmSync,
  ftruncateSync,
  writeSync,
  existsSync,
} from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { IotError, invalid, javaStyleMessage, notFound, type IotErrorName, ERROR_STATUS } from '../errors.js';
import type { FaultPlan } from '../faults.js';
import { checkParameters, evaluateOrThrow, applyPlan, parseOrThrow } from '../iot/register.js';
import { qint, requiredStr, tokenPage } from '../iot/members.js';
import { C, newId, type Ctx, type Handler, type TaskRec, type TaskStatus } from '../iot/model.js';
import type { ObjectStore } from '../s3/objects.js';
import { RULES, Validation } from '../validate.js';
import {
  REPORT_TYPES,
  errorLine,
  lineParameters,
  reportParts,
  resultLine,
  type ReportType,
} from './reports.js';

export const REPORTS_BUCKET = 'aws-iot-registration-reports';
const STATUSES: readonly TaskStatus[] = ['InProgress', 'Completed', 'Failed', 'Cancelled', 'Cancelling'];
/** How long one synchronous chunk may run before yielding to the HTTP server. */
const CHUNK_MS = 25;
const LINK_EXPIRY_SEC = 3600;

export interface BulkOptions {
  ctx: Ctx;
  objects: ObjectStore;
  faults: FaultPlan;
  /** Directory for the report journals. */
  dir: string;
  /** A presigned GET URL for an object of the reports bucket. */
  presign(bucket: string, key: string, expiresSec: number): string;
}

export class BulkRunner {
  private running = new Map<string, Promise<void>>();
  private closed = false;

  constructor(private readonly o: BulkOptions) {
    mkdirSync(o.dir, { recursive: true, mode: 0o700 });
    if (!o.objects.hasBucket(REPORTS_BUCKET)) o.objects.createBucket(REPORTS_BUCKET);
  }

  /** Resumes tasks a previous process left InProgress or Cancelling. */
  recover(): void {
    for (const t of this.o.ctx.store.values<TaskRec>(C.tasks)) {
      if (t.status === 'InProgress' || t.status === 'Cancelling') this.launch(t.taskId);
    }
  }

  /** Stops the loops after their current chunk; resolves when they have. */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.allSettled([...this.running.values()]);
  }

  /** Resolves when the task's runner has finished (for tests and the bench). */
  idle(taskId: string): Promise<void> {
    return this.running.get(taskId) ?? Promise.resolve();
  }

  private launch(taskId: string): void {
    const p = this.run(taskId)
      .catch((e: unknown) => this.finish(taskId, 'Failed', `Internal failure: ${(e as Error).message}`))
      .finally(() => this.running.delete(taskId));
    this.running.set(taskId, p);
  }

  private task(id: string): TaskRec {
    return this.o.ctx.store.get<TaskRec>(C.tasks, id)!;
  }

  private journal(taskId: string, type: ReportType): string {
    return join(this.o.dir, `${taskId}.${type}.ndjson`);
  }

  private async run(taskId: string): Promise<void> {
    const { ctx, objects, faults } = this.o;
    let task = this.task(taskId);
    if (task.status === 'Cancelling') return this.finish(taskId, 'Cancelled');
    const input = objects.get(task.inputFileBucket, task.inputFileKey);
    if (!input)
      return this.finish(
        taskId,
        'Failed',
        `Unable to read the input file s3://${task.inputFileBucket}/${task.inputFileKey} with role ${task.roleArn}: the object does not exist.`,
      );
    const template = parseOrThrow(task.templateBody);
    const data = input.data;
    const fds = {
      RESULTS: openSync(this.journal(taskId, 'RESULTS'), 'a+'),
      ERRORS: openSync(this.journal(taskId, 'ERRORS'), 'a+'),
    };
    try {
      // Cut the journals back to what the committed progress covers.
      ftruncateSync(fds.RESULTS, task.resultsBytes);
      ftruncateSync(fds.ERRORS, task.errorsBytes);
      if (task.totalBytes !== data.length)
        ctx.store.put(C.tasks, taskId, (task = { ...task, totalBytes: data.length }));
      const started = Date.now();
      let paced = 0;
      while (task.offset < data.length) {
        if (this.closed) return;
        task = this.task(taskId);
        if (task.status === 'Cancelling') break;
        const failTask = faults.faults.failTask;
        if (failTask && task.successCount + task.failureCount >= failTask.afterLines)
          return this.finish(taskId, 'Failed', failTask.message);
        const lps = faults.faults.linesPerSecond;
        const maxLines = lps ? Math.max(1, Math.ceil(lps / 20)) : Infinity;
        task = this.chunk(task, data, template, fds, maxLines);
        if (lps) {
          paced += maxLines;
          const due = started + (paced / lps) * 1000 - Date.now();
          await sleep(Math.max(0, due));
        } else {
          await new Promise((r) => setImmediate(r));
        }
      }
      task = this.task(taskId);
      await this.finish(taskId, task.status === 'Cancelling' ? 'Cancelled' : 'Completed');
    } finally {
      closeSync(fds.RESULTS);
      closeSync(fds.ERRORS);
    }
  }

  /** Processes lines for up to CHUNK_MS (or maxLines) and commits them as one transaction. */
  private chunk(
    task: TaskRec,
    data: Buffer,
    template: ReturnType<typeof parseOrThrow>,
    fds: Record<ReportType, number>,
    maxLines: number,
  ): TaskRec {
    const { ctx, faults } = this.o;
    const deadline = Date.now() + CHUNK_MS;
    return ctx.store.transaction(() => {
      let { offset, nextLine: lineNumber, successCount, failureCount } = task;
      let results = '';
      let errors = '';
      let lines = 0;
      while (offset < data.length && lines < maxLines && Date.now() < deadline) {
        let nl = data.indexOf(10, offset);
        if (nl < 0) nl = data.length;
        const end = Math.min(nl + 1, data.length);
        const text = data.toString('utf8', offset, nl).replace(/\r$/, '');
        const n = lineNumber;
        offset = end;
        lineNumber++;
        if (!text.trim()) continue; // blank lines are skipped, not counted (docs/emulator.md)
        lines++;
        try {
          const injected = faults.lineFailure(text);
          if (injected) throw injectedError(injected.error, injected.message);
          if (faults.throttled('BulkLine')) throw new IotError('ThrottlingException', 'Rate exceeded');
          const params = lineParameters(text);
          checkParameters(params);
          const response = applyPlan(ctx, evaluateOrThrow(template, params));
          results += resultLine(n, end, response);
          successCount++;
        } catch (e) {
          if (!(e instanceof IotError)) throw e;
          errors += errorLine(n, end, javaStyleMessage(e, newId()));
          failureCount++;
        }
      }
      const next: TaskRec = {
        ...task,
        offset,
        nextLine: lineNumber,
        successCount,
        failureCount,
        percentageProgress: data.length ? Math.min(99, Math.floor((offset / data.length) * 100)) : 99,
        lastModifiedDate: ctx.now(),
        resultsBytes: task.resultsBytes + (results ? writeSync(fds.RESULTS, results) : 0),
        errorsBytes: task.errorsBytes + (errors ? writeSync(fds.ERRORS, errors) : 0),
      };
      ctx.store.put(C.tasks, task.taskId, next);
      return next;
    });
  }

  /** Uploads the reports, then records the terminal status (idempotent on recovery). */
  private finish(taskId: string, status: TaskStatus, message?: string): Promise<void> {
    const { ctx, objects } = this.o;
    const task = this.task(taskId);
    const reports: Record<ReportType, string[]> = { RESULTS: [], ERRORS: [] };
    for (const type of REPORT_TYPES) {
      const file = this.journal(taskId, type);
      const committed = type === 'RESULTS' ? task.resultsBytes : task.errorsBytes;
      const text = existsSync(file) ? readFileSync(file).subarray(0, committed).toString('utf8') : '';
      reportParts(text).forEach((part, i) => {
        const key = `${taskId}/${type}/${taskId}-${i + 1}`;
        objects.put(REPORTS_BUCKET, key, Buffer.from(part), 'application/x-ndjson');
        reports[type].push(key);
      });
    }
    const next: TaskRec = {
      ...task,
      status,
      reports,
      lastModifiedDate: ctx.now(),
      percentageProgress: status === 'Completed' ? 100 : task.percentageProgress,
    };
    if (message !== undefined) next.message = message;
    ctx.store.put(C.tasks, taskId, next);
    for (const type of REPORT_TYPES) rmSync(this.journal(taskId, type), { force: true });
    return Promise.resolve();
  }

  ops(): Record<string, Handler> {
    const { ctx } = this.o;
    const { store } = ctx;
    const get = (id: string): TaskRec => {
      const t = store.get<TaskRec>(C.tasks, id);
      if (!t) throw notFound(`Thing registration task ${id} cannot be found.`);
      return t;
    };
    return {
      StartThingRegistrationTask: (r) => {
        const templateBody = requiredStr(r.body, 'templateBody');
        const bucket = requiredStr(r.body, 'inputFileBucket');
        const key = requiredStr(r.body, 'inputFileKey');
        const roleArn = requiredStr(r.body, 'roleArn');
        new Validation()
          .check('templateBody', templateBody, RULES.templateBody)
          .check('inputFileBucket', bucket, RULES.bucket)
          .check('inputFileKey', key, RULES.key)
          .check('roleArn', roleArn, RULES.roleArn)
          .done();
        parseOrThrow(templateBody);
        const active = store
          .values<TaskRec>(C.tasks)
          .find((t) => t.status === 'InProgress' || t.status === 'Cancelling');
        if (active)
          throw invalid(
            `A thing registration task (${active.taskId}) is already in progress; only one task can run at a time.`,
          );
        const now = ctx.now();
        const task: TaskRec = {
          taskId: newId(),
          creationDate: now,
          lastModifiedDate: now,
          templateBody,
          inputFileBucket: bucket,
          inputFileKey: key,
          roleArn,
          status: 'InProgress',
          successCount: 0,
          failureCount: 0,
          percentageProgress: 0,
          offset: 0,
          nextLine: 1,
          totalBytes: 0,
          resultsBytes: 0,
          errorsBytes: 0,
        };
        store.put(C.tasks, task.taskId, task);
        for (const type of REPORT_TYPES) rmSync(this.journal(task.taskId, type), { force: true });
        setImmediate(() => this.launch(task.taskId));
        return { taskId: task.taskId };
      },

      DescribeThingRegistrationTask: (r) => {
        const t = get(r.path.taskId!);
        return {
          taskId: t.taskId,
          creationDate: t.creationDate,
          lastModifiedDate: t.lastModifiedDate,
          templateBody: t.templateBody,
          inputFileBucket: t.inputFileBucket,
          inputFileKey: t.inputFileKey,
          roleArn: t.roleArn,
          status: t.status,
          message: t.message,
          successCount: t.successCount,
          failureCount: t.failureCount,
          percentageProgress: t.percentageProgress,
        };
      },

      ListThingRegistrationTasks: (r) => {
        const status = r.query.get('status');
        new Validation().check('status', status ?? undefined, { values: STATUSES }).done();
        const all = store
          .values<TaskRec>(C.tasks)
          .filter((t) => status === null || t.status === status)
          .sort((a, b) => b.creationDate - a.creationDate || (a.taskId < b.taskId ? -1 : 1))
          .map((t) => t.taskId);
        const page = tokenPage(r.query, all);
        return { taskIds: page.items, nextToken: page.next };
      },

      StopThingRegistrationTask: (r) => {
        const t = get(r.path.taskId!);
        if (t.status !== 'InProgress')
          throw invalid(
            `Thing registration task ${t.taskId} is ${t.status}; only an InProgress task can be stopped.`,
          );
        store.put(C.tasks, t.taskId, { ...t, status: 'Cancelling', lastModifiedDate: ctx.now() });
        if (!this.running.has(t.taskId)) this.launch(t.taskId);
        return undefined;
      },

      ListThingRegistrationTaskReports: (r) => {
        const type = r.query.get('reportType');
        if (type === null)
          throw invalid(
            "1 validation error detected: Value null at 'reportType' failed to satisfy constraint: Member must not be null",
          );
        new Validation().check('reportType', type, { values: REPORT_TYPES }).done();
        qint(r.query, 'maxResults', 1, 250);
        const t = store.get<TaskRec>(C.tasks, r.path.taskId!);
        if (!t) throw invalid(`Thing registration task ${r.path.taskId} cannot be found.`);
        const keys = t.reports?.[type as ReportType] ?? [];
        const page = tokenPage(r.query, keys);
        return {
          resourceLinks: page.items.map((k) => this.o.presign(REPORTS_BUCKET, k, LINK_EXPIRY_SEC)),
          reportType: type,
          nextToken: page.next,
        };
      },
    };
  }
}

function injectedError(name: string, message: string | undefined): IotError {
  const known = name in ERROR_STATUS ? (name as IotErrorName) : 'ResourceRegistrationFailureException';
  return new IotError(
    known,
    message ?? 'Register thing workflow execution terminates due to: injected failure.',
  );
}
