/**
 * The registrar: drives one batch from `keyed` to `registered`, chunk by chunk.
 *
 * Bulk mode (the default), per chunk:
 *   1. claim up to `chunkSize` keyed devices into a chunk (one Lua step: devices → registering);
 *   2. write the NDJSON input file and its manifest to S3 (line N = chunk.serials[N-1]);
 *   3. take the account's bulk slot, record the intent to start (fenced), start the task and
 *      record its id; "another task is running" means wait, never fail;
 *   4. poll the task with backoff, read RESULTS and ERRORS, and map each line back to its
 *      serial by line number: a certificate → registered; a throttled or missing line → back to
 *      keyed for a later task; any other error → failed with AWS's message.
 * Every step records where it got to in the chunk hash, so a registrar killed at any point
 * resumes the chunk where it was: a recorded intent without a task id is resolved by looking
 * the task up by its input key, never by starting a second task for the same CSRs.
 *
 * Single mode: per device RegisterThing with the profile's template, paced under the
 * profile's TPS. The intent is recorded on the device before the call; after a crash the
 * certificate a lost call made is found again by the device's public key.
 *
 * The room, a file per concern: loop.ts (the batch loop and the HSM-stall watchdog),
 * account.ts (account setup), chunks.ts (the fenced chunk state machine; each step is a
 * conditional move, chunk-state.ts), moves.ts (reports → journal moves, pure), single.ts
 * (single mode), csr.ts (the station's CSR path), ca-csr.ts (the station's CSR path on a
 * factory-CA line: signed by the CA in the HSM), parameters.ts (template parameters) and
 * deps.ts (what they are given). This file is the room's public face.
 */
export { abortBatch } from './account.js';
export { runChunk } from './chunks.js';
export { signCsrWithFactoryCa, type DeviceKeySigner } from './ca-csr.js';
export { registerCsr } from './csr.js';
export type { RegistrarDeps, RegistrarSettings } from './deps.js';
export { driveBatch, type DriveResult } from './loop.js';
export { deviceParameters } from './parameters.js';
