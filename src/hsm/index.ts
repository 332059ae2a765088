/**
 * The src/hsm room's public face (PKCS#11 sessions, device identities, KEKs, the factory CA, claim keys).
 * Other rooms import from here only; files inside the room import each other directly.
 */
export { BENCH_WORKS, DEFAULT_BENCH_DEVICES, openBenchLoop, runHsmBench, runHsmBenchAll } from './bench.js';
export type { BenchChildMessage, BenchLoop, BenchOptions, BenchResult, BenchWork } from './bench.js';
export * as caModule from './ca.js';
export { checkSigningCa, createSignedIdentity, signDeviceKey } from './ca.js';
export type { SignedDeviceIdentity } from './ca.js';
export { allowListSigner, createClaimKey } from './claim.js';
export type { CsrSubject } from './csr.js';
export { openHsm } from './hsm.js';
export type { Hsm, HsmInfo } from './hsm.js';
export type { DeviceIdentity, DeviceIdentityRequest } from './identity.js';
export { parseKekFile } from './kek.js';
export { initTokenAndPin, tokenSetupState } from './token-setup.js';
export type { TokenLibrary, TokenSetupState } from './token-setup.js';
