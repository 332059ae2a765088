/** The pure protocol codecs: bytes in, bytes out, no I/O (docs/device-protocol.md). */
export * from './at.js';
export * from './frame.js';
export { normalizePem } from './pem.js';
