/**
 * Picks the transport for a target: `tcp://host:port` goes to the TCP transport, an absolute
 * path to the tty one. serialport (a native module) is loaded on use, so a TCP-only station
 * never loads it.
 */
import { ProvlineError } from '../../core/index.js';
import { openTcpTransport, parseTcpTarget } from './tcp.js';
import type { Transport, TransportOptions } from './transport.js';

/** Checks a target's form without opening it (bad input is reported before any port opens). */
export function checkTarget(target: string): void {
  if (target.startsWith('tcp://')) parseTcpTarget(target);
  else if (!target.startsWith('/')) throw badTarget(target);
}

/** Opens `tcp://host:port` through the TCP transport and anything else as a tty path. */
export async function openTransport(target: string, options: TransportOptions = {}): Promise<Transport> {
  checkTarget(target);
  if (target.startsWith('tcp://')) return openTcpTransport(target, options);
  const { openSerialTransport } = await import('./serial.js');
  return openSerialTransport(target, options);
}

function badTarget(target: string): ProvlineError {
  return new ProvlineError('TRANSPORT_BAD_TARGET', `"${target}" is neither a tty path nor tcp://host:port`, {
    kind: 'invalid-input',
    hint: 'pass the port path explicitly, e.g. /dev/ttyACM0, or tcp://127.0.0.1:3333 for ser2net',
  });
}
