/**
 * The hook's local runner: the Lambda handler behind an HTTP endpoint, the shape the AWS IoT
 * stand-in invokes a function ARN through (`--lambda <arn>=<url>`, `PUT /_emulator/lambdas`):
 * the event is POSTed as JSON and the handler's answer is the JSON body. Each invocation gets
 * a context whose remaining time counts down AWS's 5 seconds.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { HookHandler } from './handler.js';

export interface HookRunner {
  url: string;
  server: Server;
  close(): Promise<void>;
}

const AWS_BUDGET_MS = 5000;
const MAX_EVENT_BYTES = 256 * 1024;

export async function startHookRunner(
  handler: HookHandler,
  opts: { host?: string; port?: number } = {},
): Promise<HookRunner> {
  const server = createServer((req, res) => {
    const started = Date.now();
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size <= MAX_EVENT_BYTES) chunks.push(c);
    });
    req.on('end', () => {
      const reply = (status: number, body: unknown): void => {
        const text = JSON.stringify(body);
        res.writeHead(status, {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(text),
        });
        res.end(text);
      };
      if (req.method !== 'POST') return reply(405, { error: 'POST the hook event as JSON' });
      if (size > MAX_EVENT_BYTES) return reply(413, { error: 'the event is too large' });
      let event: unknown;
      try {
        event = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      } catch {
        return reply(400, { error: 'the event is not JSON' });
      }
      handler(event, { getRemainingTimeInMillis: () => AWS_BUDGET_MS - (Date.now() - started) }).then(
        (answer) => reply(200, answer),
        (e: unknown) => reply(500, { errorMessage: (e as Error).message }),
      );
    });
  });
  server.keepAliveTimeout = 30_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => resolve());
  });
  const { address, port } = server.address() as AddressInfo;
  const host = address.includes(':') ? `[${address}]` : address;
  return {
    url: `http://${host}:${port}/`,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Maps `arn` to `url` in the stand-in (its `PUT /_emulator/lambdas`). */
export async function mapInStandIn(iotEndpoint: string, arn: string, url: string): Promise<void> {
  const res = await fetch(`${iotEndpoint.replace(/\/$/, '')}/_emulator/lambdas`, {
    method: 'PUT',
    body: JSON.stringify({ [arn]: url }),
  });
  if (res.status !== 200)
    throw new Error(`the stand-in refused the hook mapping: HTTP ${res.status} ${await res.text()}`);
}
