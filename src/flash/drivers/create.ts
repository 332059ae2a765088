/** Builds the driver a profile names, over an open transport. */
import { ProvlineError } from '../../core/index.js';
import type { DriverName } from '../../config/index.js';
import type { Transport } from '../transport/transport.js';
import type { DeviceDriver } from './driver.js';
import { DEFAULT_SEC_TAG, NordicAtDriver, type NordicAtOptions } from './nordic-at.js';
import { SerialV1Driver, type SerialV1Options } from './serial-v1.js';

export interface CreateDriverRequest {
  driver: DriverName;
  transport: Transport;
  /** The profile's driverSettings (e.g. `secTag` for nordic-at). */
  settings?: Record<string, string | number | boolean>;
  /** Timing overrides (tests, slow devices). */
  timing?: DriverTiming;
}

export type DriverTiming = Pick<
  NordicAtOptions & SerialV1Options,
  'commandTimeoutMs' | 'keygenTimeoutMs' | 'attempts' | 'writePasses' | 'connectTimeoutMs'
>;

export function createDriver(req: CreateDriverRequest): DeviceDriver {
  const timing = req.timing ?? {};
  switch (req.driver) {
    case 'nordic-at': {
      const raw = req.settings?.secTag ?? DEFAULT_SEC_TAG;
      const secTag = typeof raw === 'number' ? raw : Number(raw);
      if (!Number.isInteger(secTag)) {
        throw new ProvlineError(
          'DRIVER_BAD_SETTINGS',
          `driverSettings.secTag must be a whole number, got "${String(raw)}"`,
          { kind: 'invalid-input' },
        );
      }
      return new NordicAtDriver(req.transport, { secTag, ...timing });
    }
    case 'provline-serial-v1': {
      const chunk = req.settings?.chunkSize;
      return new SerialV1Driver(req.transport, {
        ...timing,
        ...(typeof chunk === 'number' ? { chunkSize: chunk } : {}),
      });
    }
  }
}
