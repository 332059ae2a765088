/** Starts a device simulator of either kind on a serial port (a pty end, usually). */
import type { DriverName } from '../src/config/index.js';
import { parseFaults } from './core/faults.js';
import { SimulatorHost, type DeviceModel } from './core/host.js';
import type { ConnectPolicy } from './core/mqtt-connect.js';
import { NordicModemModel } from './nordic-at.js';
import { SerialV1Model } from './serial-v1.js';

export interface SimulatorRequest {
  driver: DriverName;
  port: string;
  /** The serial (provline-serial-v1) or IMEI (nordic-at). */
  serial: string;
  /** Line rate to pace at; 0 or undefined = unthrottled. */
  baudRate?: number;
  /** Fault spec, see devices/core/faults.ts. */
  faults?: string;
  /** serial-v1 only: the AES-256 KEK that unwraps wrapped keys. */
  kek?: Buffer;
  /** serial-v1 only: false for firmware without a network link (no CONNECT). */
  network?: boolean;
  /** How the device's first MQTT connect waits and retries (tests shorten the pauses). */
  connectPolicy?: ConnectPolicy;
  log?: (line: string) => void;
}

export interface Simulator {
  host: SimulatorHost;
  model: DeviceModel;
  close(): Promise<void>;
}

export async function startSimulator(req: SimulatorRequest): Promise<Simulator> {
  const faults = parseFaults(req.faults);
  const common = {
    ...(req.connectPolicy ? { connectPolicy: req.connectPolicy } : {}),
    ...(req.log ? { log: req.log } : {}),
  };
  const model: DeviceModel =
    req.driver === 'nordic-at'
      ? new NordicModemModel({ imei: req.serial, ...common })
      : new SerialV1Model({
          serial: req.serial,
          ...(req.kek ? { kek: req.kek } : {}),
          ...(req.network === false ? { network: false } : {}),
          ...common,
        });
  const host = await SimulatorHost.attach(model, {
    port: req.port,
    faults,
    ...(req.baudRate ? { baudRate: req.baudRate } : {}),
    ...(req.log ? { log: req.log } : {}),
  });
  return { host, model, close: () => host.close() };
}

export { NordicModemModel, SerialV1Model, SimulatorHost };
export { parseFaults, FaultSpecError } from './core/faults.js';
export { DEVICE_CONNECT_POLICY, type ConnectPolicy } from './core/mqtt-connect.js';
export { firstConnect } from './core/mqtt-connect.js';
export { fleetProvision, type FleetOutcome, type FleetRequest } from './core/fleet-provision.js';
