/**
 * The flash stage's public face. Inside, imports point one way, down:
 *
 *   station/     ports, visits, stores over the journal interface (src/batch/journal.ts), views
 *     ▼
 *   drivers/     the driver contract, nordic-at, provline-serial-v1, createDriver
 *     ▼
 *   protocol/    pure codecs: serial-v1 framing, AT commands and answers, PEM text
 *   transport/   the Transport interface; tty, ser2net TCP, socat pty pairs
 *
 * (station/ also opens transports.) Other folders import from here only.
 */
export * from './drivers/index.js';
export * from './transport/index.js';
export * from './station/index.js';
