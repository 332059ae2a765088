/**
 * The JITR activator as a local process (`provline jitr-activator --profile <p>`, which parses
 * the options and calls `runJitrActivator`): it serves the Lambda handler's logic over HTTP
 * (POST the event, get the decision back), maps its function ARN to that URL in the AWS IoT
 * stand-in (PUT /_emulator/lambdas), makes sure of the topic rule of each factory CA
 * (`SELECT * FROM '$aws/events/certificates/registered/<caId>'`, lambda action), and writes
 * one JSON line per decision. On SIGINT or SIGTERM it removes the mapping (the rules stay, as
 * deployed infrastructure would), lets the requests in flight finish and returns.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { JitrActivatorOptions } from '../src/cli/index.js';
import {
  ActivationStepError,
  activatorRuleName,
  activatorRulePayload,
  decisionLog,
  ensureActivatorRule,
  processEvent,
  registeredTopic,
  type RuleOutcome,
} from '../src/cloud/jitr/index.js';
import { ProvlineError } from '../src/core/index.js';
import { processStop } from './signals.js';

const MAX_EVENT_BYTES = 256 * 1024;

async function mapLambda(standInUrl: string, arn: string, url: string | null): Promise<void> {
  let res: Response;
  try {
    res = await fetch(`${standInUrl}/_emulator/lambdas`, {
      method: 'PUT',
      body: JSON.stringify({ [arn]: url }),
    });
  } catch (e) {
    throw new ProvlineError('EMULATOR_UNREACHABLE', `the AWS IoT stand-in at ${standInUrl} does not answer`, {
      cause: e,
      retryable: true,
      hint: 'Is it running? See `provline stack status`.',
    });
  }
  if (!res.ok)
    throw new ProvlineError(
      'EMULATOR_UNREACHABLE',
      `the stand-in refused the Lambda mapping of ${arn}: ${await res.text()}`,
      {
        details: { arn, status: res.status },
      },
    );
}

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_EVENT_BYTES) req.destroy(new Error(`the event is larger than ${MAX_EVENT_BYTES} bytes`));
      else chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function reply(res: ServerResponse, status: number, body: unknown): void {
  const data = Buffer.from(JSON.stringify(body));
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': data.length });
  res.end(data);
}

export async function runJitrActivator(o: JitrActivatorOptions): Promise<void> {
  const stopped = o.stopSignal ?? processStop();
  const server = createServer((req, res) => {
    void (async () => {
      if (req.method !== 'POST')
        return reply(res, 405, { errorMessage: 'POST the registered event as JSON' });
      let event: unknown;
      try {
        event = JSON.parse((await readBody(req)).toString('utf8'));
      } catch (e) {
        return reply(res, 400, { errorMessage: `the event is not JSON: ${(e as Error).message}` });
      }
      try {
        const result = await processEvent(o.clients.iot, o.config, event);
        o.write(decisionLog(o.config, result));
        reply(res, 200, result);
      } catch (e) {
        const step = e instanceof ActivationStepError ? { step: e.step, certificateId: e.certificateId } : {};
        o.write({
          msg: 'jitr failure',
          profile: o.config.settings.profile,
          ...step,
          reason: (e as Error).message,
        });
        reply(res, 500, { errorType: (e as Error).name, errorMessage: (e as Error).message });
      }
    })();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port ?? 0, o.host ?? '127.0.0.1', () => resolve());
  });
  const { address, port } = server.address() as AddressInfo;
  const url = `http://${address}:${port}/`;
  try {
    await mapLambda(o.standInUrl, o.functionArn, url);
    const rules: Array<{ ruleName: string; topic: string; outcome: RuleOutcome }> = [];
    for (const ca of o.config.cas) {
      const ruleName = activatorRuleName(o.config.settings.profile, ca.certificateId);
      const outcome = await ensureActivatorRule(
        o.clients,
        ruleName,
        activatorRulePayload(ca.certificateId, o.functionArn, o.config.settings.profile),
      );
      rules.push({ ruleName, topic: registeredTopic(ca.certificateId), outcome });
    }
    o.write({
      msg: 'jitr activator ready',
      profile: o.config.settings.profile,
      pid: process.pid,
      url,
      functionArn: o.functionArn,
      rules,
    });
  } catch (e) {
    server.close();
    throw e;
  }
  const signal = await stopped;
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  server.closeIdleConnections();
  let unmapped = true;
  try {
    await mapLambda(o.standInUrl, o.functionArn, null);
  } catch {
    unmapped = false; // the stand-in may be gone first; nothing to undo then
  }
  await closed;
  o.write({ msg: 'jitr activator stopped', profile: o.config.settings.profile, signal, unmapped });
}
