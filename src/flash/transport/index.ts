/** The transport layer: the Transport interface and how to open one. Knows no protocol. */
export {
  DEFAULT_BAUD,
  lineRateBytesPerSecond,
  type OpenTransport,
  type Transport,
  type TransportOptions,
} from './transport.js';
export { checkTarget, openTransport } from './open.js';
export { parseTcpTarget } from './tcp.js';
export { startPtyPair, spawnDetached, type PtyPair } from './pty.js';
