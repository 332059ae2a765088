/**
 * Simulated devices for the CLI (`provline device-sim`, and the line `provline demo` and
 * `provline rehearse` run): the device simulators of devices/ behind the CLI's
 * `SimulatedDevices`. The simulators (serialport, the device crypto) are loaded when the first
 * device is plugged in; checking a fault spec loads only its parser.
 */
import { createPrivateKey } from 'node:crypto';
import { FaultSpecError, parseFaults } from '../devices/index.js';
import type { SimulatedDevices } from '../src/cli/index.js';

export const simulatedDevices: SimulatedDevices = {
  checkFaults(spec) {
    try {
      parseFaults(spec);
      return undefined;
    } catch (e) {
      if (e instanceof FaultSpecError) return e.message;
      throw e;
    }
  },

  async start(o) {
    const { startSimulator } = await import('../devices/index.js');
    const sim = await startSimulator(o);
    return {
      unplugged: sim.host.unplugged,
      stats: sim.host.stats,
      close: () => sim.close(),
    };
  },

  async provisionByClaim(o) {
    const { firstConnect, fleetProvision } = await import('../devices/index.js');
    const { claimKeyPem, ...rest } = o;
    const out = await fleetProvision({ ...rest, claimKey: createPrivateKey(claimKeyPem) });
    if (!out.ok) return { ok: false, stage: out.stage, errorCode: out.errorCode, message: out.message };
    const attempts = await firstConnect({
      host: o.host,
      port: o.port,
      clientId: out.thingName,
      rootCaPem: o.rootCaPem,
      certificatePem: out.certificatePem,
      key: out.key.privateKey,
    });
    const last = attempts.at(-1);
    const connected = last?.outcome === 'connack' && last.code === 0;
    return {
      ok: true,
      thingName: out.thingName,
      certificateId: out.certificateId,
      connected,
      ...(connected ? {} : { connectReason: last?.reason ?? 'no attempt' }),
    };
  },
};
