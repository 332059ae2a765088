/**
 * The src/cli room's public face (the command line, and the entry points it takes from workers/ (entries.ts)).
 * Other rooms import from here only; files inside the room import each other directly.
 */
export type {
  Entries,
  JitrActivatorOptions,
  PipelineWorkerOptions,
  SimulatedDevices,
  StationDaemonOptions,
  StationDaemonRun,
} from './entries.js';
export { runCli } from './main.js';
