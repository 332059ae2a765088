/** The drivers: the contract a station uses (driver.ts), both drivers, and the factory. */
export * from './driver.js';
export { createDriver, type CreateDriverRequest, type DriverTiming } from './create.js';
export { CME_ERRORS, V1_ERRORS, cmeError, v1StatusError, type DeviceErrorSpec } from './errors.js';
export { DEFAULT_SEC_TAG, NordicAtDriver, type NordicAtOptions } from './nordic-at.js';
export { SerialV1Driver, type SerialV1Options } from './serial-v1.js';
