/**
 * The flash stage's public face. Inside, imports point one way:
 *
 *   station/ ──▶ drivers/ ──▶ protocol/   (pure codecs: framer, AT parser, PEM text)
 *                    └──────▶ transport/  (the Transport interface, tty, TCP, pty pairs)
 *
 * Other folders import from here only.
 */
export * from './drivers/index.js';
export * from './transport/index.js';
export * from './station/index.js';
