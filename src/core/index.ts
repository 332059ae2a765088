/**
 * The src/core room's public face (typed errors and their codes, the one DER reader and writer, logging, process helpers).
 * Other rooms import from here only; files inside the room import each other directly.
 */
export { storedErrorCode } from './codes.js';
export {
  NULL,
  bitString,
  boolean,
  children,
  explicit,
  fromPem,
  implicitConstructed,
  implicitPrimitive,
  namedBits,
  octetString,
  oid,
  oidString,
  printable,
  readTlv,
  seq,
  set,
  smallInteger,
  time,
  tlv,
  toPem,
  trimToDer,
  unsignedInteger,
  utf8,
} from './der.js';
export { ProvlineError, isProvlineError, messageOf, usageError } from './errors.js';
export type { ErrorCode, ErrorKind, ErrorOptions } from './errors.js';
export { toJobError } from './job-error.js';
export { createLogger } from './log.js';
export type { Logger } from './log.js';
export { packageRoot, packageVersion } from './paths.js';
export { freePort, isAlive, startWorkerProcess, stopPid, waitFor } from './proc.js';
