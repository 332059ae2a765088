/**
 * What the CLI asks of the process entry points in workers/. A command parses and checks its
 * options, resolves the configuration, then hands over to one of these; the entry point wires
 * the parts, handles the signals and returns how it ended, which the CLI turns into an exit code.
 *
 * src/ imports nothing from workers/, devices/ or emulator/: workers/cli.ts, the provline
 * process, passes the implementations in (`buildProgram(out, env, entries)`).
 */
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { RegisterCsr } from '../batch/index.js';
import type { CloudClients } from '../cloud/index.js';
import type { CompiledConfig } from '../cloud/jitr/index.js';
import type { ResolvedProfile, Config, DriverName, HsmSettings } from '../config/index.js';
import type { StationRun, StationView } from '../flash/index.js';
import type { Hsm } from '../hsm/index.js';
import type { BatchStore, Journal, Role } from '../jobs/index.js';
import type { Runtime } from '../stack/index.js';

/** `provline worker`: workers/pipeline.ts. */
export interface PipelineWorkerOptions {
  redisUrl: string;
  runtime: Runtime;
  config: Pick<Config, 'redis' | 'workers'>;
  roles: Role[];
  /** Re-enqueue the work of every unfinished batch before starting. */
  sweep: boolean;
  log: Logger;
  hsmSettings: () => Promise<HsmSettings>;
  /** Resolves when the process is asked to stop (default: the first SIGTERM or SIGINT). */
  stopSignal?: Promise<string>;
}

/** The station's certificates for device-made keys, given the journal it runs over. */
export type StationRegistrar = (
  journal: { redis: Redis; journal: Journal; batches: BatchStore },
  openHsm: () => Promise<Hsm>,
) => Promise<RegisterCsr>;

/** `provline station`: workers/station.ts. */
export interface StationDaemonOptions {
  stationId: string;
  profile: ResolvedProfile;
  ports: string[];
  /** Each port handles one device, then the daemon returns. */
  once: boolean;
  baudRate: number;
  /** After the first SIGTERM or SIGINT, how long writes in progress may take; a second abandons them. */
  graceMs: number;
  /** The journal's Redis; unset: the cache only. */
  redisUrl: string | undefined;
  prefix: string;
  /** Prefetched bundles, and where results are recorded while Redis is unreachable. */
  cacheDir?: string;
  view: StationView;
  log: Logger;
  hsmSettings: () => Promise<HsmSettings>;
  env: NodeJS.ProcessEnv;
  /** Set when the profile's devices make their own keys (the station obtains the certificate). */
  registrar?: StationRegistrar;
  /** Called once when the journal answers at start (not while starting offline). */
  onJournal?: (redis: Redis) => Promise<void>;
}

export interface StationDaemonRun {
  run: StationRun;
  /** Every device verified (`once`), or nothing abandoned, unrecorded or failed at a port. */
  ok: boolean;
}

/** `provline jitr-activator` and `provline rehearse`: workers/jitr-activator.ts. */
export interface JitrActivatorOptions {
  clients: CloudClients;
  config: CompiledConfig;
  /** The stand-in's control-plane URL, whose /_emulator/lambdas maps the ARN to this process. */
  standInUrl: string;
  functionArn: string;
  host?: string;
  /** 0 (default) picks a free port. */
  port?: number;
  /** One JSON document per call: the ready line, each decision, failures, the stop line. */
  write: (line: object) => void;
  /** Resolves when the process is asked to stop (default: the first SIGTERM or SIGINT). */
  stopSignal?: Promise<string>;
}

/** A simulated device plugged into one end of a serial link: workers/devices.ts over devices/. */
export interface SimulatedDeviceOptions {
  driver: DriverName;
  port: string;
  /** The serial (provline-serial-v1) or IMEI (nordic-at). */
  serial: string;
  /** Line rate to pace at; 0 or unset: unthrottled. */
  baudRate?: number;
  /** Fault spec (docs/device-protocol.md); check it first with `checkFaults`. */
  faults?: string;
  /** serial-v1: the AES-256 KEK that unwraps wrapped keys. */
  kek?: Buffer;
  /** serial-v1: false for firmware without a network link. */
  network?: boolean;
  log?: (line: string) => void;
}

export interface SimulatedDevice {
  /** Settles when the device unplugs itself (an unplug fault). */
  unplugged: Promise<unknown>;
  stats: { commands: number; bytesIn: number; bytesOut: number };
  /** Unplugs it. */
  close(): Promise<void>;
}

/** A device holding a claim (a temporary one from an installer's app, in the demo). */
export interface ClaimDeviceRequest {
  host: string;
  port: number;
  clientId: string;
  rootCaPem: string;
  claimCertificatePem: string;
  /** Held in memory only. */
  claimKeyPem: string;
  templateName: string;
  parameters: Record<string, string>;
  /** `csr`: a key made on the device (preferred); `keys`: AWS makes the key pair. */
  mode: 'csr' | 'keys';
  subject: string;
}

/** What the device saw: provisioned (or where it stopped), then its first connect as the thing. */
export type ClaimDeviceOutcome =
  | { ok: true; thingName: string; certificateId: string; connected: boolean; connectReason?: string }
  | { ok: false; stage: string; errorCode: string; message: string };

export interface SimulatedDevices {
  /** Why a fault spec is refused, or undefined when it is valid. */
  checkFaults(spec: string): string | undefined;
  start(o: SimulatedDeviceOptions): Promise<SimulatedDevice>;
  /** A device provisions itself by claim over MQTT, then connects as its new thing. */
  provisionByClaim(o: ClaimDeviceRequest): Promise<ClaimDeviceOutcome>;
}

export interface Entries {
  pipelineWorker(o: PipelineWorkerOptions): Promise<void>;
  station(o: StationDaemonOptions): Promise<StationDaemonRun>;
  jitrActivator(o: JitrActivatorOptions): Promise<void>;
  devices: SimulatedDevices;
}

/** A programming error, not an operator's: provline's process (workers/cli.ts) always wires them. */
function notWired(name: string): never {
  throw new Error(
    `the ${name} entry point is not wired into this process (start provline through workers/cli.ts)`,
  );
}

/** For a program built without entry points (its help, tests of the command tree). */
export const NO_ENTRIES: Entries = {
  pipelineWorker: () => notWired('pipeline worker'),
  station: () => notWired('station daemon'),
  jitrActivator: () => notWired('JITR activator'),
  devices: {
    checkFaults: () => notWired('simulated devices'),
    start: () => notWired('simulated devices'),
    provisionByClaim: () => notWired('simulated devices'),
  },
};
