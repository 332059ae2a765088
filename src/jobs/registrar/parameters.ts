/** Template parameters per device, from the batch plan and the CSR in the journal. */
import type { BatchPlan } from '../../batch/index.js';
import { ProvlineError } from '../../core/index.js';
import type { DeviceRecord } from '../journal.js';

/** Template parameters for one device: the plan's, with {thingName} and {csr} filled in. */
export function deviceParameters(plan: BatchPlan, serial: string, csrPem: string): Record<string, string> {
  const device = planDevice(plan, serial);
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(device.parameters))
    out[name] = value.replaceAll('{thingName}', device.thingName).replaceAll('{csr}', csrPem);
  return out;
}

export function bulkParameters(
  plan: BatchPlan,
  serial: string,
  rec: DeviceRecord | undefined,
): Record<string, string> {
  const csr = rec?.fields.csrPem;
  if (!csr)
    throw new ProvlineError('DEVICE_NOT_KEYED', `device ${serial} has no CSR stored`, { retryable: false });
  return deviceParameters(plan, serial, csr);
}

const deviceIndex = new WeakMap<BatchPlan, Map<string, BatchPlan['devices'][number]>>();

function planDevice(plan: BatchPlan, serial: string): BatchPlan['devices'][number] {
  let idx = deviceIndex.get(plan);
  if (!idx) {
    idx = new Map(plan.devices.map((d) => [d.serial, d]));
    deviceIndex.set(plan, idx);
  }
  const d = idx.get(serial);
  if (!d) throw new ProvlineError('DEVICE_NOT_IN_PLAN', `serial ${serial} is not in batch ${plan.batchId}`);
  return d;
}
