/**
 * The emulator room's public face (the local AWS IoT stand-in (control plane, S3, MQTT data plane), started by workers/).
 * Other rooms import from here only; files inside the room import each other directly.
 */
export { ArgsError, credentialsFromIni, parseArgs, startFaults } from './config.js';
export { startEmulator } from './server.js';
export type { Credentials } from './sigv4.js';
