/**
 * Simulated devices for the CLI (`provline device-sim`, and the line `provline demo` and
 * `provline rehearse` run): the device simulators of devices/ behind the CLI's
 * `SimulatedDevices`. The simulators (serialport, the device crypto) are loaded when the first
 * device is plugged in; checking a fault spec loads only its parser.
 */
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
};
