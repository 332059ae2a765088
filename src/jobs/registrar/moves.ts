/**
 * What a registration result means for the journal, as pure functions: a finished bulk task's
 * RESULTS and ERRORS (parsed by src/cloud/bulk.ts, keyed by input line) become one move per
 * device of the chunk; single mode and the station's CSR path build their moves with the same
 * helpers. No I/O: the registrar reads the records and applies what comes back.
 *
 * Line N of a chunk's input file is `serials[N-1]`. For each device still `registering` under
 * this chunk:
 *   - a certificate that certifies the device's own public key → `registered`;
 *   - a certificate for any other key → `failed` (REGISTRATION_KEY_MISMATCH);
 *   - a retryable error (throttling, service errors) or a line a task left out → back to
 *     `keyed` for a later task, until `rounds` attempts are spent
 *     (REGISTRATION_RETRIES_EXHAUSTED);
 *   - any other error → `failed` (REGISTRATION_REJECTED) with AWS's error name and message.
 * Every move is conditional on the device still belonging to the chunk (`regChunk`), so the
 * moves of a stale registrar change nothing.
 */
import type { DeviceRecord, TransitionRequest } from '../../batch/index.js';
import type { BulkReports, TaskOutcome, IssuedCertificate } from '../../cloud/index.js';

/** Moves made on a chunk's behalf apply only while the device still belongs to that chunk. */
export function ownedBy(chunkTag: string): { field: string; equals: string } {
  return { field: 'regChunk', equals: chunkTag };
}

/** A move to `failed` at the registration stage (unconditional: add `from`/`when` to narrow). */
export function failMove(batchId: string, serial: string, code: string, message: string): TransitionRequest {
  return {
    batchId,
    serial,
    to: 'failed',
    fields: { errorCode: code, errorMessage: message, errorStage: 'registration' },
  };
}

/** A device that goes round again (throttled, or left out by a failed task), or fails for good. */
export function retryOrFail(
  batchId: string,
  rec: DeviceRecord,
  chunkTag: string,
  reason: { code: string; message: string },
  maxRounds: number,
): TransitionRequest {
  const rounds = Number(rec.fields.regRounds ?? 0) + 1;
  const when = ownedBy(chunkTag);
  if (rounds >= maxRounds)
    return {
      ...failMove(
        batchId,
        rec.serial,
        'REGISTRATION_RETRIES_EXHAUSTED',
        `${rounds} registration attempts; the last: ${reason.message}`,
      ),
      from: ['registering'],
      when,
    };
  return {
    batchId,
    serial: rec.serial,
    to: 'keyed',
    from: ['registering'],
    when,
    fields: { regRounds: String(rounds), lastRegError: `${reason.code}: ${reason.message}` },
  };
}

/** A device AWS issued a certificate for: `registered`, with what a bundle needs. */
export function registeredMove(
  batchId: string,
  rec: DeviceRecord,
  chunkTag: string,
  issued: IssuedCertificate,
  extra: Record<string, string>,
): TransitionRequest {
  return {
    batchId,
    serial: rec.serial,
    to: 'registered',
    from: ['registering'],
    when: ownedBy(chunkTag),
    fields: {
      certificatePem: issued.certificatePem,
      certificateId: issued.certificateId,
      certificateArn: issued.certificateArn,
      ...(issued.thingArn ? { thingArn: issued.thingArn } : {}),
      ...extra,
    },
  };
}

/** A move that fails a device still registering under `chunkTag`, and only then. */
export function failOwned(
  batchId: string,
  serial: string,
  chunkTag: string,
  error: { code: string; message: string },
): TransitionRequest {
  return {
    ...failMove(batchId, serial, error.code, error.message),
    from: ['registering'],
    when: ownedBy(chunkTag),
  };
}

/**
 * The certificate must certify the key the HSM made for this serial, or it is not ours. The
 * DER of a certificate carries its SubjectPublicKeyInfo verbatim, so a byte search is exact
 * and costs microseconds (parsing 1000 certificates per chunk cost more than the task). A
 * record without a public key has nothing to compare: the certificate is taken.
 */
export function keyMatches(publicKeyPem: string | undefined, certificatePem: string): boolean {
  if (!publicKeyPem) return true;
  try {
    const key = pemBody(publicKeyPem);
    return key.length > 0 && pemBody(certificatePem).includes(key);
  } catch {
    return false;
  }
}

function pemBody(pem: string): Buffer {
  return Buffer.from(pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
}

/** One chunk of a batch as the mapping needs it. */
export interface ChunkLines {
  batchId: string;
  n: number;
  /** In input-line order: line N is serials[N-1]. */
  serials: readonly string[];
  /** The bulk task that read the chunk's input file (for messages and the device record). */
  taskId?: string;
}

export interface ReportMovesInput {
  chunk: ChunkLines;
  /**
   * The journal's records of `chunk.serials`, in the same order (undefined where none): their
   * state and `regChunk` (still ours?), `publicKey` (is the certificate for it?) and
   * `regRounds` (attempts so far).
   */
  records: readonly (DeviceRecord | undefined)[];
  outcome: Pick<TaskOutcome, 'status' | 'message'>;
  reports: BulkReports;
  /** `workers.registrationRounds`: attempts before a retryable failure is final. */
  maxRounds: number;
}

export interface ReportMoves {
  moves: TransitionRequest[];
  registered: number;
  retried: number;
  failed: number;
}

/** The journal moves a finished bulk task's reports call for (see the module comment). */
export function reportMoves(input: ReportMovesInput): ReportMoves {
  const { chunk, records, outcome, reports, maxRounds } = input;
  const tag = String(chunk.n);
  const out: ReportMoves = { moves: [], registered: 0, retried: 0, failed: 0 };
  chunk.serials.forEach((serial, i) => {
    const rec = records[i];
    if (!rec || rec.serial !== serial || rec.state !== 'registering' || rec.fields.regChunk !== tag) return;
    const line = i + 1;
    const result = reports.results.get(line);
    const error = reports.errors.get(line);
    if (result && keyMatches(rec.fields.publicKey, result.certificatePem)) {
      out.moves.push(registeredMove(chunk.batchId, rec, tag, result, { taskId: chunk.taskId ?? '' }));
      out.registered++;
    } else if (result) {
      out.moves.push(
        failOwned(chunk.batchId, serial, tag, {
          code: 'REGISTRATION_KEY_MISMATCH',
          message: `task ${chunk.taskId} line ${line} returned a certificate for another key (certificate ${result.certificateId})`,
        }),
      );
      out.failed++;
    } else if (error && !error.retryable) {
      out.moves.push(
        failOwned(chunk.batchId, serial, tag, {
          code: 'REGISTRATION_REJECTED',
          message: `${error.errorName}: ${error.message}`,
        }),
      );
      out.failed++;
    } else {
      const reason = error
        ? { code: error.errorName, message: error.message }
        : {
            code: 'REGISTRATION_LINE_MISSING',
            message: `task ${chunk.taskId} ended ${outcome.status}${outcome.message ? `: ${outcome.message}` : ''} without this line`,
          };
      const move = retryOrFail(chunk.batchId, rec, tag, reason, maxRounds);
      out.moves.push(move);
      if (move.to === 'failed') out.failed++;
      else out.retried++;
    }
  });
  return out;
}

/** A task AWS refused to start (template, role, bucket): every device of the chunk fails. */
export function refusedMoves(
  chunk: ChunkLines,
  error: { code: string; message: string },
): TransitionRequest[] {
  return chunk.serials.map((serial) => failOwned(chunk.batchId, serial, String(chunk.n), error));
}
