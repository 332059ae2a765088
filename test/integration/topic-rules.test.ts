/**
 * Topic rules in the stand-in (emulator/rules), as a process: the control plane through the
 * AWS CLI (/usr/bin/aws's driver) and @aws-sdk/client-iot, with AWS's shapes and errors; the
 * engine through real MQTT clients: a device's publish (mosquitto_pub) and the stand-in's own
 * `$aws/events/certificates/registered/<caId>` (a JITR connect by the official device SDK)
 * invoke the rule's lambda action at a local HTTP endpoint, mapped with PUT /_emulator/lambdas;
 * a disabled rule runs nothing; a failing function is in the reasons log and runs the error
 * action.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { GetTopicRuleCommand, ListTopicRulesCommand } from '@aws-sdk/client-iot';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AwsCli } from '../helpers/aws-cli.js';
import { tempDir } from '../helpers/home.js';
import { KEY, REGION, SECRET } from './emulator-helpers.js';
import {
  makeCa,
  makeDevice,
  makeLeaf,
  mosquitto,
  registerCa,
  sdk5,
  startStandIn,
  topicPolicy,
  uniq,
  waitEvent,
  type Device,
  type StandIn,
} from './mqtt-helpers.js';

const STEP_MS = 30_000;
const ARN = (name: string): string => `arn:aws:lambda:us-east-1:123456789012:function:${name}`;

/** A local "function": records the events POSTed to it and answers `answer(event)`. */
interface Fn {
  url: string;
  events: unknown[];
  wait(pred: (e: unknown) => boolean, budgetMs?: number): Promise<unknown>;
  close(): Promise<void>;
}

async function fn(answer: (e: unknown) => { status: number; body: unknown }): Promise<Fn> {
  const events: unknown[] = [];
  const waiters: Array<() => void> = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const e = JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
      events.push(e);
      const a = answer(e);
      res.writeHead(a.status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(a.body));
      for (const w of waiters.splice(0)) w();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`,
    events,
    wait: (pred, budgetMs = STEP_MS) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`no matching event within ${budgetMs} ms: ${JSON.stringify(events)}`)),
          budgetMs,
        );
        const check = (): void => {
          const hit = events.find(pred);
          if (hit !== undefined) {
            clearTimeout(timer);
            resolve(hit);
          } else waiters.push(check);
        };
        check();
      }),
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

/** One QoS 1 message from `dev` with mosquitto_pub (Debian's client). */
function publish(dev: Device, topic: string, message: string): ReturnType<typeof mosquitto> {
  return mosquitto('mosquitto_pub', standIn, dev, ['-i', uniq('pub'), '-q', '1', '-t', topic, '-m', message]);
}

let standIn: StandIn;

async function mapLambdas(s: StandIn, map: Record<string, string | null>): Promise<void> {
  const res = await fetch(`${s.iotUrl}/_emulator/lambdas`, { method: 'PUT', body: JSON.stringify(map) });
  expect(res.status, await res.clone().text()).toBe(200);
}

describe('topic rules in the stand-in', () => {
  let s: StandIn;
  let dir: string;
  let cli: AwsCli;
  const aws = async (
    args: string[],
  ): Promise<{ rc: number; out: unknown; error?: { name: string; message: string } }> => {
    const r = await cli.run(
      ['iot', ...args, '--endpoint-url', s.iotUrl, '--output', 'json', '--no-cli-pager'],
      STEP_MS,
    );
    if (r.rc === 0) return { rc: 0, out: r.stdout.trim() ? (JSON.parse(r.stdout) as unknown) : {} };
    const m = /An error occurred \(([A-Za-z]+)\) when calling the \w+ operation: ([\s\S]*)/.exec(r.stderr);
    return {
      rc: r.rc,
      out: undefined,
      error: m ? { name: m[1]!, message: m[2]!.trim() } : { name: '?', message: r.stderr },
    };
  };
  const createRule = (ruleName: string, body: string) =>
    aws(['create-topic-rule', '--rule-name', ruleName, '--topic-rule-payload', body]);
  const payload = (sql: string, functionArn: string, extra: object = {}): string =>
    JSON.stringify({ sql, actions: [{ lambda: { functionArn } }], ...extra });

  beforeAll(async () => {
    dir = tempDir('provline-rules-');
    s = await startStandIn(join(dir, 'state'));
    standIn = s;
    cli = new AwsCli({
      ...process.env,
      AWS_ACCESS_KEY_ID: KEY,
      AWS_SECRET_ACCESS_KEY: SECRET,
      AWS_DEFAULT_REGION: REGION,
      AWS_PAGER: '',
      AWS_CONFIG_FILE: '/dev/null',
      AWS_SHARED_CREDENTIALS_FILE: '/dev/null',
    });
  });
  afterAll(async () => {
    cli?.close();
    await s?.stop();
  });

  it('the control plane with the AWS CLI: create, get, list (by topic, by state, paged), disable, enable, replace, delete, with AWS errors', async () => {
    const name = uniq('r').replace(/-/g, '_');
    const sql = "SELECT * FROM 'factory/+/telemetry'";
    expect((await createRule(name, payload(sql, ARN('telemetry'), { description: 'tele' }))).rc).toBe(0);

    const got = (await aws(['get-topic-rule', '--rule-name', name])).out as {
      ruleArn: string;
      rule: Record<string, unknown>;
    };
    expect(got.ruleArn).toBe(`arn:aws:iot:us-east-1:123456789012:rule/${name}`);
    expect(got.rule).toMatchObject({
      ruleName: name,
      sql,
      description: 'tele',
      actions: [{ lambda: { functionArn: ARN('telemetry') } }],
      ruleDisabled: false,
      awsIotSqlVersion: '2015-10-08',
    });
    expect(Number.isNaN(Date.parse(String(got.rule.createdAt)))).toBe(false); // the CLI prints it as a date

    const dup = await aws([
      'create-topic-rule',
      '--rule-name',
      name,
      '--topic-rule-payload',
      payload(sql, ARN('x')),
    ]);
    expect(dup.error?.name).toBe('ResourceAlreadyExistsException');

    const byTopic = (await aws(['list-topic-rules', '--topic', 'factory/line1/telemetry'])).out as {
      rules: Array<{ ruleName: string; topicPattern: string; ruleDisabled: boolean }>;
    };
    expect(byTopic.rules.find((r) => r.ruleName === name)).toMatchObject({
      topicPattern: 'factory/+/telemetry',
      ruleDisabled: false,
    });
    const otherTopic = (await aws(['list-topic-rules', '--topic', 'elsewhere'])).out as { rules: unknown[] };
    expect(otherTopic.rules).toEqual([]);

    expect((await aws(['disable-topic-rule', '--rule-name', name])).rc).toBe(0);
    const disabled = (await aws(['list-topic-rules', '--rule-disabled'])).out as {
      rules: Array<{ ruleName: string }>;
    };
    expect(disabled.rules.map((r) => r.ruleName)).toContain(name);
    expect((await aws(['enable-topic-rule', '--rule-name', name])).rc).toBe(0);
    expect(
      ((await aws(['get-topic-rule', '--rule-name', name])).out as { rule: { ruleDisabled: boolean } }).rule
        .ruleDisabled,
    ).toBe(false);

    const replaced = "SELECT * FROM 'factory/#'";
    expect(
      (
        await aws([
          'replace-topic-rule',
          '--rule-name',
          name,
          '--topic-rule-payload',
          payload(replaced, ARN('all')),
        ])
      ).rc,
    ).toBe(0);
    const after = await s.iot.send(new GetTopicRuleCommand({ ruleName: name }));
    expect(after.rule?.sql).toBe(replaced);
    expect(after.rule?.actions).toEqual([{ lambda: { functionArn: ARN('all') } }]);

    // More than one page through the SDK's nextToken.
    const names = [1, 2, 3].map((i) => `${name}_p${i}`);
    for (const n of names) expect((await createRule(n, payload("SELECT * FROM 'p/q'", ARN('p')))).rc).toBe(0);
    const seen: string[] = [];
    let token: string | undefined;
    do {
      const page = await s.iot.send(
        new ListTopicRulesCommand({ topic: 'p/q', maxResults: 2, nextToken: token }),
      );
      seen.push(...(page.rules ?? []).map((r) => r.ruleName!));
      token = page.nextToken;
    } while (token);
    expect(seen).toEqual(names);

    expect((await aws(['delete-topic-rule', '--rule-name', name])).rc).toBe(0);
    for (const op of ['get-topic-rule', 'delete-topic-rule', 'enable-topic-rule', 'disable-topic-rule']) {
      const gone = await aws([op, '--rule-name', name]);
      expect(gone.error, op).toEqual({
        name: 'UnauthorizedException',
        message: `Access to topic rule '${name}' was denied`,
      });
    }
  });

  it('what the stand-in cannot run is refused at creation, saying what it supports', async () => {
    const create = (ruleName: string, body: string) =>
      aws(['create-topic-rule', '--rule-name', ruleName, '--topic-rule-payload', body]);
    const n = uniq('bad').replace(/-/g, '_');
    const where = await create(`${n}_1`, payload("SELECT * FROM 'a/b' WHERE temp > 30", ARN('f')));
    expect(where.error?.name).toBe('InvalidRequestException');
    expect(where.error?.message).toContain("runs only rules of the form SELECT * FROM '<topic filter>'");
    expect(where.error?.message).toContain('"WHERE temp > 30" after the topic');
    const fields = await create(`${n}_2`, payload("SELECT temp, topic() AS t FROM 'a/b'", ARN('f')));
    expect(fields.error?.name).toBe('InvalidRequestException');
    expect(fields.error?.message).toContain('the select list "temp, topic() AS t"');
    const garbage = await create(`${n}_3`, payload('not sql at all', ARN('f')));
    expect(garbage.error?.name).toBe('SqlParseException');
    const sns = await create(
      `${n}_4`,
      JSON.stringify({
        sql: "SELECT * FROM 'a/b'",
        actions: [
          {
            sns: {
              targetArn: 'arn:aws:sns:us-east-1:123456789012:t',
              roleArn: 'arn:aws:iam::123456789012:role/r',
            },
          },
        ],
      }),
    );
    expect(sns.error?.name).toBe('InvalidRequestException');
    expect(sns.error?.message).toContain('runs only lambda actions');
    const arn = await create(
      `${n}_5`,
      payload("SELECT * FROM 'a/b'", 'arn:aws:lambda:us-east-1:1:function:x'),
    );
    expect(arn.error?.message).toContain('is not a Lambda function ARN');
    const badName = await create('bad-name', payload("SELECT * FROM 'a/b'", ARN('f')));
    expect(badName.error?.name).toBe('InvalidRequestException');
    expect(badName.error?.message).toContain("at 'ruleName' failed to satisfy constraint");
    const badFilter = await create(`${n}_6`, payload("SELECT * FROM 'a/#/b'", ARN('f')));
    expect(badFilter.error?.name).toBe('SqlParseException');
    const listed = (await aws(['list-topic-rules'])).out as { rules: Array<{ ruleName: string }> };
    expect(listed.rules.filter((r) => r.ruleName.startsWith(n))).toEqual([]);
  });

  it("a device's publish and the stand-in's own JITR registered event invoke the rule's lambda action with the message as the event; a disabled rule runs nothing", async () => {
    const target = await fn(() => ({ status: 200, body: { ok: true } }));
    try {
      const prefix = uniq('rt');
      const arn = ARN(prefix);
      await mapLambdas(s, { [arn]: target.url });
      const rule = prefix.replace(/-/g, '_');
      expect((await createRule(rule, payload(`SELECT * FROM '${prefix}/+/up'`, arn))).rc).toBe(0);

      const dev = await makeDevice(s, dir, topicPolicy(prefix));
      const pub = await publish(dev, `${prefix}/d1/up`, '{"temp":21.5}');
      expect(pub.code, pub.stderr).toBe(0);
      expect(await target.wait((e) => (e as { temp?: number }).temp === 21.5)).toEqual({ temp: 21.5 });
      const invoked = await waitEvent(s, (e) => e.kind === 'rule.invoked' && e.topic === `${prefix}/d1/up`);
      expect(invoked.details).toMatchObject({ ruleName: rule, functionArn: arn, answer: { ok: true } });

      // The stand-in's own event: a JITR connect of a certificate signed by a registered CA.
      const ca = makeCa(uniq('rules-ca'));
      const caId = await registerCa(s, ca);
      const jit = `${rule}_jitr`;
      expect(
        (await createRule(jit, payload(`SELECT * FROM '$aws/events/certificates/registered/${caId}'`, arn)))
          .rc,
      ).toBe(0);
      const leaf = makeLeaf(ca, [['CN', uniq('jitr-dev')]], dir);
      const device = sdk5(s, leaf, uniq('jitr-client'));
      await expect(device.connected).rejects.toThrow();
      await device.stop(false);
      const registered = (await target.wait(
        (e) => (e as { certificateId?: string }).certificateId === leaf.certificateId,
      )) as Record<string, unknown>;
      expect(registered).toMatchObject({
        certificateId: leaf.certificateId,
        caCertificateId: caId,
        certificateStatus: 'PENDING_ACTIVATION',
        awsAccountId: '123456789012',
      });

      // Disabled: a publish reaches subscribers as before, the rule does not run.
      expect((await aws(['disable-topic-rule', '--rule-name', rule])).rc).toBe(0);
      const before = target.events.length;
      const marker = await publish(dev, `${prefix}/d2/up`, '{"n":1}');
      expect(marker.code).toBe(0);
      // Then enabled again: the next publish is the next event the function sees.
      expect((await aws(['enable-topic-rule', '--rule-name', rule])).rc).toBe(0);
      const next = await publish(dev, `${prefix}/d3/up`, '{"n":2}');
      expect(next.code).toBe(0);
      await target.wait((e) => (e as { n?: number }).n === 2);
      expect(target.events.slice(before)).toEqual([{ n: 2 }]);
    } finally {
      await target.close();
    }
  });

  it('a failing function is logged with the reason and runs the error action; an unmapped ARN and a non-JSON payload are logged too', async () => {
    const failing = await fn(() => ({ status: 500, body: { errorMessage: 'boom' } }));
    const errors = await fn(() => ({ status: 200, body: {} }));
    try {
      const prefix = uniq('fail');
      await mapLambdas(s, { [ARN(`${prefix}-f`)]: failing.url, [ARN(`${prefix}-e`)]: errors.url });
      const rule = prefix.replace(/-/g, '_');
      const body = payload(`SELECT * FROM '${prefix}/x'`, ARN(`${prefix}-f`), {
        errorAction: { lambda: { functionArn: ARN(`${prefix}-e`) } },
      });
      expect((await createRule(rule, body)).rc).toBe(0);
      const unmapped = `${rule}_unmapped`;
      expect(
        (await createRule(unmapped, payload(`SELECT * FROM '${prefix}/x'`, ARN(`${prefix}-nobody`)))).rc,
      ).toBe(0);
      const dev = await makeDevice(s, dir, topicPolicy(prefix));
      expect((await publish(dev, `${prefix}/x`, '{"v":1}')).code).toBe(0);

      const failed = await waitEvent(s, (e) => e.kind === 'rule.failed' && e.details?.ruleName === rule);
      expect(failed.reason).toContain('HTTP 500');
      const errorEvent = (await errors.wait(() => true)) as Record<string, unknown>;
      expect(errorEvent).toMatchObject({
        ruleName: rule,
        topic: `${prefix}/x`,
        base64OriginalPayload: Buffer.from('{"v":1}').toString('base64'),
        failures: [{ failedAction: 'LambdaAction', failedResource: ARN(`${prefix}-f`) }],
      });
      const nobody = await waitEvent(s, (e) => e.kind === 'rule.failed' && e.details?.ruleName === unmapped);
      expect(nobody.reason).toContain(`no local endpoint is mapped to ${ARN(`${prefix}-nobody`)}`);

      expect((await publish(dev, `${prefix}/x`, 'not json')).code).toBe(0);
      const binary = await waitEvent(
        s,
        (e) => e.kind === 'rule.failed' && e.reason.includes('is not JSON') && e.topic === `${prefix}/x`,
      );
      expect(binary.reason).toContain('SELECT * over JSON payloads');
    } finally {
      await failing.close();
      await errors.close();
    }
  });
});
