/**
 * `provline rehearse` end to end on real components (its own redis-server, SoftHSM token and
 * stand-in, socat ptys, simulated devices): the shipped sample lots pass for the bulk, the
 * device-csr and the claim strategies (the claim lot through provline's hook served beside the
 * stand-in), a planted bad lot fails fast with the validator's line-numbered problems in both
 * the JSON and the JUnit file, a planted bad claim profile fails its lint precisely, and
 * nothing it started is left behind.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { isAlive } from '../../src/core/proc.js';
import type { Verdict } from '../../src/cli/rehearse/verdict.js';
import { waitFor } from '../../src/core/proc.js';
import { BIN, ROOT, json, runCli } from '../helpers/cli.js';
import { tempDir } from '../helpers/home.js';

/** One rehearsal of a small lot on a busy machine: stack up, every stage, stack down. */
const REHEARSE_BUDGET_MS = 120_000;
const CONFIG = join(ROOT, 'examples/rehearse/provline.config.yaml');

/** Whether something still listens on the port (loopback). */
function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ port, host: '127.0.0.1' });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** The JUnit file through a standard XML parser (scripts/check-junit.py, Python's ElementTree). */
function checkJunit(file: string, allowFailures = false): { tests: number; failures: number; code: number } {
  try {
    const out = execFileSync(
      'python3',
      [join(ROOT, 'scripts/check-junit.py'), file, ...(allowFailures ? ['--allow-failures'] : [])],
      {
        encoding: 'utf8',
      },
    );
    return { ...(JSON.parse(out) as { tests: number; failures: number }), code: 0 };
  } catch (e) {
    const err = e as { status: number; stdout: string; stderr: string };
    if (!err.stdout) throw new Error(`check-junit: ${err.stderr}`, { cause: e });
    return { ...(JSON.parse(err.stdout) as { tests: number; failures: number }), code: err.status };
  }
}

/** `rehearse <csv> --profile <p> --config <file> [--junit <file>] --json [extra…]`. */
function rehearseCli(
  csv: string,
  profile: string,
  config: string,
  junit?: string,
  extra: string[] = [],
): ReturnType<typeof runCli> {
  return runCli(
    [
      'rehearse',
      csv,
      '--profile',
      profile,
      '--config',
      config,
      ...(junit ? ['--junit', junit] : []),
      '--json',
      ...extra,
    ],
    { timeoutMs: REHEARSE_BUDGET_MS },
  );
}

/** `ports`: the stack's four, and a claim lot's hook runner. */
async function expectNothingLeft(v: Verdict, ports = 4): Promise<void> {
  expect(v.stack?.stopped).toBe(true);
  // Redis, the stand-in and the socat pty pairs.
  expect(v.stack!.processes.map((x) => x.name)).toEqual(
    expect.arrayContaining(['redis-server', 'workers/emulator.js', 'socat']),
  );
  for (const x of v.stack!.processes) expect(isAlive(x.pid, x.name), `${x.name} pid ${x.pid}`).toBe(false);
  expect(v.stack!.ports.length).toBe(ports);
  for (const port of v.stack!.ports) expect(await listening(port), `port ${port}`).toBe(false);
}

describe('provline rehearse', () => {
  const dir = tempDir('provline-rehearse-test-');

  it(
    'passes the shipped sensor lot (strategy bulk, provline-serial-v1, wrapped keys): every check and every serial, the JUnit file parses with no failure, nothing left running',
    async () => {
      const junit = join(dir, 'sensors.xml');
      const r = await rehearseCli('examples/rehearse/sensors.csv', 'sample-sensor', CONFIG, junit);
      expect(r.code, r.stdout + r.stderr).toBe(0);
      const v = json<Verdict>(r);
      expect(v.verdict).toBe('pass');
      expect(v.strategy).toBe('bulk');
      expect(v.checks.map((c) => [c.name, c.ok])).toEqual([
        ['lint: profile', true],
        ['lint: template', true],
        ['lint: policy', true],
        ['lint: account', true],
        ['csv: validation', true],
        ['stack', true],
        ['hsm stage', true],
        ['registration', true],
        ['station', true],
        ['first connect', true],
      ]);
      expect(v.devices).toHaveLength(6);
      for (const d of v.devices) {
        expect(d, d.serial).toMatchObject({ ok: true, state: 'connected', connected: true });
        expect(d.certificateId).toMatch(/^[0-9a-f]{64}$/);
      }
      expect(v.devices.map((d) => d.line)).toEqual([2, 3, 4, 5, 6, 7]);
      // Quiet off a terminal: no progress lines, nothing on stderr.
      expect(r.stderr).toBe('');
      expect(checkJunit(junit)).toEqual({ tests: 16, failures: 0, errors: 0, skipped: 0, code: 0 });
      await expectNothingLeft(v);
    },
    REHEARSE_BUDGET_MS + 10_000,
  );

  it(
    'passes the shipped modem lot (strategy device-csr, nordic-at: keys made on the modem, registered at the station); a sample larger than the lot is the whole lot',
    async () => {
      const junit = join(dir, 'modems.xml');
      const r = await rehearseCli('examples/rehearse/modems.csv', 'sample-modem', CONFIG, junit, [
        '--sample',
        '50',
      ]);
      expect(r.code, r.stdout + r.stderr).toBe(0);
      const v = json<Verdict>(r);
      expect(v).toMatchObject({
        verdict: 'pass',
        strategy: 'device-csr',
        driver: 'nordic-at',
        rows: 3,
        sampled: 3,
      });
      expect(v.checks.find((c) => c.name === 'hsm stage')!.message).toContain(
        'each device makes its own key',
      );
      for (const d of v.devices)
        expect(d, d.serial).toMatchObject({ ok: true, state: 'connected', connected: true });
      expect(checkJunit(junit).failures).toBe(0);
      await expectNothingLeft(v);
    },
    REHEARSE_BUDGET_MS + 10_000,
  );

  it(
    'passes a lot of the shipped JITP profile (strategy jitp: certificates signed by the factory CA in the HSM, registered by AWS at the first connect)',
    async () => {
      const csv = join(dir, 'jitp.csv');
      writeFileSync(csv, 'serial\nJR-0001\nJR-0002\n');
      const r = await runCli(['rehearse', csv, '--profile', 'sensor-jitp', '--json'], {
        timeoutMs: REHEARSE_BUDGET_MS,
      });
      expect(r.code, r.stdout + r.stderr).toBe(0);
      const v = json<Verdict>(r);
      expect(v).toMatchObject({ verdict: 'pass', strategy: 'jitp', sampled: 2 });
      expect(v.checks.find((c) => c.name === 'registration')!.message).toContain(
        'first connect (jit-template)',
      );
      for (const d of v.devices)
        expect(d, d.serial).toMatchObject({ ok: true, state: 'connected', connected: true });
      await expectNothingLeft(v);
    },
    REHEARSE_BUDGET_MS + 10_000,
  );

  it(
    'passes a JITR lot: the CA registered without a template, the activator started beside the stand-in activates each device at its first connect, and stopped with the rest',
    async () => {
      const profiles = join(dir, 'jitr-profiles');
      execFileSync('mkdir', ['-p', profiles]);
      const jitr = readFileSync(join(ROOT, 'config/profiles/sensor-jitp.yaml'), 'utf8')
        .replace('strategy: jitp', 'strategy: jitr')
        .replace("thingName: 'jsensor-{serial}'", "thingName: 'rsensor-{serial}'")
        .replace('label: provline-demo-ca', 'label: provline-rehearse-jitr-ca')
        .replace('../templates/sensor-jitp.json', join(ROOT, 'config/templates/sensor-jitp.json'))
        .replace('../policies/demo-device.json', join(ROOT, 'config/policies/demo-device.json'));
      writeFileSync(join(profiles, 'sensor-jitr.yaml'), jitr);
      const own = join(dir, 'jitr.yaml');
      writeFileSync(own, `profileDirs: [${profiles}]\n`);
      const csv = join(dir, 'jitr.csv');
      writeFileSync(csv, 'serial\nJT-0001\nJT-0002\n');
      const r = await runCli(['rehearse', csv, '--profile', 'sensor-jitr', '--config', own, '--json'], {
        timeoutMs: REHEARSE_BUDGET_MS,
      });
      expect(r.code, r.stdout + r.stderr).toBe(0);
      const v = json<Verdict>(r);
      expect(v).toMatchObject({ verdict: 'pass', strategy: 'jitr', sampled: 2 });
      for (const d of v.devices)
        expect(d, d.serial).toMatchObject({ ok: true, state: 'connected', connected: true });
      await expectNothingLeft(v);
    },
    REHEARSE_BUDGET_MS + 10_000,
  );

  it(
    "passes the shipped claim lot (strategy claim): the claim made in the token, provline's hook served beside the stand-in, each device provisions itself through the hook and connects as its thing; nothing left running, the hook included",
    async () => {
      const junit = join(dir, 'claims.xml');
      const r = await rehearseCli('examples/rehearse/claims.csv', 'sample-claim', CONFIG, junit);
      expect(r.code, r.stdout + r.stderr).toBe(0);
      const v = json<Verdict>(r);
      expect(v).toMatchObject({ verdict: 'pass', strategy: 'claim', rows: 4, sampled: 4 });
      expect(v.checks.map((c) => [c.name, c.ok])).toEqual([
        ['lint: profile', true],
        ['lint: template', true],
        ['lint: policy', true],
        ['lint: account', true],
        ['lint: claim policy', true],
        ['csv: validation', true],
        ['stack', true],
        ['hsm stage', true],
        ['registration', true],
        ['station', true],
        ['first connect', true],
      ]);
      expect(v.checks.find((c) => c.name === 'registration')!.message).toMatch(
        /fleet template sample-claim with provline's hook, the allow-list of 4 of 4 serial\(s\) published/,
      );
      // Its policies and hook are written for account 111122223333 in eu-west-1: the stand-in ran
      // as that account, so the claim policy and the device policy were judged as AWS would
      // judge them (the devices could not have connected under them in another account).
      const samples = join(ROOT, 'examples/rehearse');
      expect(v.checks.find((c) => c.name === 'lint: account')!.message).toBe(
        `the profile names account 111122223333 in eu-west-1 (${samples}/policies/sample-device.json, ${samples}/policies/sample-claim.json, claim.hookArn): the stand-in runs as account 111122223333 in eu-west-1`,
      );
      expect(v.checks.find((c) => c.name === 'stack')!.message).toContain(
        '(account 111122223333, eu-west-1)',
      );
      expect(v.devices.map((d) => d.serial)).toEqual(['SCL-0001', 'SCL-0002', 'SCL-0003', 'SCL-0004']);
      for (const d of v.devices) {
        expect(d, d.serial).toMatchObject({
          ok: true,
          state: 'connected',
          connected: true,
          claim: 'provisioned',
          thingName: `sclaim-${d.serial}`,
        });
        // The certificate the device got for its own key, through CreateCertificateFromCsr.
        expect(d.certificateId).toMatch(/^[0-9a-f]{64}$/);
      }
      expect(new Set(v.devices.map((d) => d.certificateId)).size).toBe(4);
      expect(r.stderr).toBe('');
      expect(checkJunit(junit)).toEqual({ tests: 15, failures: 0, errors: 0, skipped: 0, code: 0 });
      // The stack's processes and ports, and the hook runner's port.
      await expectNothingLeft(v, 5);
    },
    REHEARSE_BUDGET_MS + 10_000,
  );

  it('fails a planted bad claim lot precisely, before any stack: a fleet template lacking a parameter the hook sets, a claim policy that would not let the device subscribe to its answers', async () => {
    const profiles = join(dir, 'bad-claim-profiles');
    mkdirSync(profiles);
    const sample = readFileSync(join(ROOT, 'examples/rehearse/profiles/sample-claim.yaml'), 'utf8');
    // A template without HardwareRevision, which the hook sets from the CSV row.
    const template = JSON.parse(
      readFileSync(join(ROOT, 'examples/rehearse/templates/sample-claim.json'), 'utf8'),
    ) as {
      Parameters: Record<string, unknown>;
      Resources: { thing: { Properties: Record<string, unknown> } };
    };
    delete template.Parameters.HardwareRevision;
    delete template.Resources.thing.Properties.AttributePayload;
    writeFileSync(join(dir, 'no-hw-template.json'), JSON.stringify(template));
    writeFileSync(
      join(profiles, 'claim-no-hw.yaml'),
      sample
        .replace('../templates/sample-claim.json', join(dir, 'no-hw-template.json'))
        .replaceAll('../', `${join(ROOT, 'examples/rehearse')}/`),
    );
    // A claim policy that subscribes to the certificate answers but not to RegisterThing's.
    const policy = readFileSync(join(ROOT, 'examples/rehearse/policies/sample-claim.json'), 'utf8').replace(
      ',\n        "arn:aws:iot:eu-west-1:111122223333:topicfilter/$aws/provisioning-templates/sample-claim/provision/*"',
      '',
    );
    expect(policy).not.toContain('topicfilter/$aws/provisioning-templates');
    writeFileSync(join(dir, 'no-subscribe-policy.json'), policy);
    writeFileSync(
      join(profiles, 'claim-no-subscribe.yaml'),
      sample
        .replace('../policies/sample-claim.json', join(dir, 'no-subscribe-policy.json'))
        .replaceAll('../', `${join(ROOT, 'examples/rehearse')}/`),
    );
    const own = join(dir, 'bad-claim.yaml');
    writeFileSync(own, `profileDirs: [${profiles}]\n`);
    const rehearse = (profile: string, junit: string) =>
      rehearseCli('examples/rehearse/claims.csv', profile, own, junit);
    const [noHw, noSub] = await Promise.all([
      rehearse('claim-no-hw', join(dir, 'no-hw.xml')),
      rehearse('claim-no-subscribe', join(dir, 'no-sub.xml')),
    ]);

    expect(noHw.code, noHw.stdout + noHw.stderr).toBe(4);
    const hw = json<Verdict>(noHw);
    expect(hw.stack).toBeUndefined();
    const templateCheck = hw.checks.find((c) => c.name === 'lint: template')!;
    const missing =
      'the template declares no parameter HardwareRevision (the hook sets it from the CSV row: profile parameters); declared: SerialNumber, LotId, ThingName';
    expect(templateCheck).toMatchObject({ ok: false, problems: [{ message: missing }] });
    expect(templateCheck.message).toBe(
      `the fleet template ${join(dir, 'no-hw-template.json')} cannot serve the claim [CLAIM_TEMPLATE_INVALID]: ${missing}`,
    );
    const hwXml = readFileSync(join(dir, 'no-hw.xml'), 'utf8');
    expect(hwXml).toContain(`<testcase classname="rehearse.checks" name="lint: template"`);
    expect(hwXml).toContain(`[CLAIM_TEMPLATE_INVALID]: ${missing}"`);
    expect(checkJunit(join(dir, 'no-hw.xml'), true)).toMatchObject({ code: 0, failures: 1 });

    expect(noSub.code, noSub.stdout + noSub.stderr).toBe(4);
    const sub = json<Verdict>(noSub);
    expect(sub.stack).toBeUndefined();
    const policyCheck = sub.checks.find((c) => c.name === 'lint: claim policy')!;
    const arn =
      'arn:aws:iot:eu-west-1:111122223333:topicfilter/$aws/provisioning-templates/sample-claim/provision/json';
    expect(policyCheck.ok).toBe(false);
    expect(policyCheck.problems!.map((p) => p.message)).toEqual([
      `iot:Subscribe on ${arn}/accepted (the device could not subscribe to its answer)`,
      `iot:Subscribe on ${arn}/rejected (the device could not subscribe to its answer)`,
    ]);
    expect(policyCheck.message).toBe(
      `the claim policy ${join(dir, 'no-subscribe-policy.json')} would not let a device provision itself [CLAIM_POLICY_INVALID]: it lacks iot:Subscribe on ${arn}/accepted (the device could not subscribe to its answer) (and 1 more)`,
    );
    // Everything else of that profile linted clean; nothing ran.
    expect(sub.checks.find((c) => c.name === 'lint: template')!.ok).toBe(true);
    for (const name of ['stack', 'hsm stage', 'registration', 'station', 'first connect'])
      expect(
        sub.checks.find((c) => c.name === name),
        name,
      ).toMatchObject({ ok: false, skipped: true });
    const subXml = readFileSync(join(dir, 'no-sub.xml'), 'utf8');
    expect(subXml).toContain(`${arn}/rejected (the device could not subscribe to its answer)`);
    expect(checkJunit(join(dir, 'no-sub.xml'), true)).toMatchObject({ code: 0, failures: 1 });
  });

  it(
    "fails a claim lot with an impostor planted (--device-fault SCL-0002=impostor: its device presents a serial outside the lot): exit 4, that serial denied with the hook's reason in the JSON and the JUnit file, the other serials provisioned and connected",
    async () => {
      const junit = join(dir, 'impostor.xml');
      const r = await rehearseCli('examples/rehearse/claims.csv', 'sample-claim', CONFIG, junit, [
        '--device-fault',
        'SCL-0002=impostor',
      ]);
      expect(r.code, r.stdout + r.stderr).toBe(4);
      const v = json<Verdict>(r);
      expect(v.verdict).toBe('fail');
      expect(v.checks.find((c) => c.name === 'device faults')).toMatchObject({
        ok: true,
        message: 'a drill: planted in the simulated devices of SCL-0002 (impostor)',
      });
      const reason =
        'NOT_IN_LOT: serial "SCL-0002-IMPOSTOR" is in no submitted lot of template sample-claim (its device, client id sclaim-SCL-0002, presented serial "SCL-0002-IMPOSTOR")';
      expect(v.devices.find((d) => d.serial === 'SCL-0002')).toMatchObject({
        ok: false,
        state: 'failed',
        claim: 'denied',
        claimReason: reason,
        code: 'DEVICE_PROVISION_DENIED',
        message: `denied by the hook: ${reason}`,
        connected: false,
      });
      for (const d of v.devices.filter((x) => x.serial !== 'SCL-0002'))
        expect(d, d.serial).toMatchObject({
          ok: true,
          state: 'connected',
          connected: true,
          claim: 'provisioned',
        });
      expect(v.checks.filter((c) => !c.ok).map((c) => [c.name, c.message])).toEqual([
        ['station', '3 of 4 device(s) written and verified by their own answers (provline-serial-v1)'],
        [
          'first connect',
          "3 of 4 device(s) connected to the stand-in's MQTT endpoint as their things, seen in its events log",
        ],
      ]);
      const xml = readFileSync(junit, 'utf8');
      const esc = (t: string): string => t.replaceAll('"', '&quot;');
      expect(xml).toContain(
        `<failure message="${esc(`denied by the hook: ${reason}`)}" type="DEVICE_PROVISION_DENIED">serial SCL-0002 (CSV line 3) ended failed [DEVICE_PROVISION_DENIED]: denied by the hook: ${esc(reason)}</failure>`,
      );
      // One serial and two checks failed; the JUnit file still parses and counts them.
      expect(checkJunit(junit, true)).toMatchObject({ code: 0, tests: 16, failures: 3 });
      await expectNothingLeft(v, 5);
    },
    REHEARSE_BUDGET_MS + 10_000,
  );

  it('refuses a --device-fault that is not <serial>=<fault spec> (exit 2), and one naming a serial outside the lot (exit 4, before any stack)', async () => {
    const [noSerial, badSpec, outside] = await Promise.all([
      rehearseCli('examples/rehearse/claims.csv', 'sample-claim', CONFIG, undefined, [
        '--device-fault',
        'impostor',
      ]),
      rehearseCli('examples/rehearse/claims.csv', 'sample-claim', CONFIG, undefined, [
        '--device-fault',
        'SCL-0002=impostr',
      ]),
      rehearseCli('examples/rehearse/claims.csv', 'sample-claim', CONFIG, undefined, [
        '--device-fault',
        'SCL-9999=impostor',
      ]),
    ]);
    expect(noSerial.code).toBe(2);
    expect(noSerial.stderr).toContain(
      '--device-fault takes <serial>=<fault spec>, for example SN-0002=impostor, got "impostor"',
    );
    expect(badSpec.code).toBe(2);
    expect(badSpec.stderr).toContain('--device-fault SCL-0002=impostr: unknown fault kind "impostr"');
    expect(outside.code, outside.stdout + outside.stderr).toBe(4);
    const v = json<Verdict>(outside);
    expect(v.stack).toBeUndefined();
    expect(v.checks.find((c) => c.name === 'device faults')).toMatchObject({
      ok: false,
      message: '--device-fault names SCL-9999, not in the rehearsed lot',
    });
  });

  it('fails a claim profile whose claim policy names another account than its device policy and hook, naming both, before any stack', async () => {
    const profiles = join(dir, 'other-account-profiles');
    mkdirSync(profiles);
    const samples = join(ROOT, 'examples/rehearse');
    const policy = readFileSync(join(samples, 'policies/sample-claim.json'), 'utf8').replaceAll(
      ':111122223333:',
      ':444455556666:',
    );
    writeFileSync(join(dir, 'other-account-claim.json'), policy);
    writeFileSync(
      join(profiles, 'claim-other-account.yaml'),
      readFileSync(join(samples, 'profiles/sample-claim.yaml'), 'utf8')
        .replace('../policies/sample-claim.json', join(dir, 'other-account-claim.json'))
        .replaceAll('../', `${samples}/`),
    );
    const own = join(dir, 'other-account.yaml');
    writeFileSync(own, `profileDirs: [${profiles}]\n`);
    const junit = join(dir, 'other-account.xml');
    const r = await rehearseCli('examples/rehearse/claims.csv', 'claim-other-account', own, junit);
    expect(r.code, r.stdout + r.stderr).toBe(4);
    const v = json<Verdict>(r);
    expect(v.stack).toBeUndefined();
    const conflict = `the profile names 2 accounts: 111122223333 (${samples}/policies/sample-device.json, claim.hookArn) and 444455556666 (${join(dir, 'other-account-claim.json')}); its policies, templates and hook must all be for one account`;
    expect(v.checks.find((c) => c.name === 'lint: account')).toMatchObject({
      ok: false,
      message: `the profile's documents are not for one account and region [PROFILE_ACCOUNTS_DIFFER]: ${conflict}`,
      problems: [{ message: conflict }],
    });
    // The rest of the lint is clean; the claim policy is not judged in either account.
    for (const name of ['lint: profile', 'lint: template', 'lint: policy', 'csv: validation'])
      expect(v.checks.find((c) => c.name === name)?.ok, name).toBe(true);
    for (const name of [
      'lint: claim policy',
      'stack',
      'hsm stage',
      'registration',
      'station',
      'first connect',
    ])
      expect(
        v.checks.find((c) => c.name === name),
        name,
      ).toMatchObject({ ok: false, skipped: true });
    expect(readFileSync(junit, 'utf8')).toContain('444455556666 (');
    expect(checkJunit(junit, true)).toMatchObject({ code: 0, failures: 1 });
  });

  it(
    'rehearses an evenly spread sample of the lot, always the same rows (the first, then every third of six)',
    async () => {
      const run = async (): Promise<Verdict> => {
        const r = await rehearseCli('examples/rehearse/sensors.csv', 'sample-sensor', CONFIG, undefined, [
          '--sample',
          '2',
        ]);
        expect(r.code, r.stdout + r.stderr).toBe(0);
        return json<Verdict>(r);
      };
      const v = await run();
      expect(v).toMatchObject({ verdict: 'pass', rows: 6, sampled: 2 });
      expect(v.devices.map((d) => [d.serial, d.line])).toEqual([
        ['SMP-0001', 2],
        ['SMP-0004', 5],
      ]);
      await expectNothingLeft(v);
    },
    REHEARSE_BUDGET_MS + 10_000,
  );

  it('fails fast on a planted bad lot: the line-numbered problems in the JSON and in the JUnit file, no stack started, exit 4', async () => {
    const csv = join(dir, 'bad.csv');
    writeFileSync(csv, 'serial,hw_rev\nSMP-0101,A\nSMP 0102,B\nSMP-0101,C\nSMP-0104,rev B\n');
    const junit = join(dir, 'bad.xml');
    const r = await rehearseCli(csv, 'sample-sensor', CONFIG, junit);
    expect(r.code, r.stdout + r.stderr).toBe(4);
    const v = json<Verdict>(r);
    expect(v.verdict).toBe('fail');
    expect(v.stack).toBeUndefined();
    expect(v.devices).toEqual([]);
    const check = v.checks.find((c) => c.name === 'csv: validation')!;
    expect(check.ok).toBe(false);
    expect(check.message).toBe(
      'bad.csv: 3 problems in 4 rows (profile sample-sensor); nothing was rehearsed',
    );
    expect(check.problems!.map((p) => ('line' in p ? [p.line, p.column, p.code] : []))).toEqual([
      [3, 'serial', 'SERIAL_INVALID'],
      [4, 'serial', 'SERIAL_DUPLICATE'],
      [5, 'hw_rev', 'ATTRIBUTE_VALUE_INVALID'],
    ]);
    for (const name of ['stack', 'hsm stage', 'registration', 'station', 'first connect'])
      expect(
        v.checks.find((c) => c.name === name),
        name,
      ).toMatchObject({ ok: false, skipped: true });

    const xml = readFileSync(junit, 'utf8');
    expect(checkJunit(junit)).toMatchObject({ code: 1, failures: 1 });
    expect(checkJunit(junit, true)).toMatchObject({ code: 0, tests: 10, failures: 1 });
    expect(xml).toContain(
      '<failure message="bad.csv: 3 problems in 4 rows (profile sample-sensor); nothing was rehearsed"',
    );
    expect(xml).toContain(
      'line 3, column serial: serial contains a character that is not allowed [SERIAL_INVALID] (value &quot;SMP 0102&quot;)',
    );
    expect(xml).toMatch(
      /line 4, column serial: serial &quot;SMP-0101&quot; is on line 2 and again on line 4 \[SERIAL_DUPLICATE\]/,
    );
    expect(xml).toContain('line 5, column hw_rev:');
  });

  it('fails the lint of a broken template and of a policy that is not JSON, with where and why, before any stack', async () => {
    const profiles = join(dir, 'profiles');
    const own = join(dir, 'own.yaml');
    execFileSync('mkdir', ['-p', profiles]);
    const sample = readFileSync(join(ROOT, 'examples/rehearse/profiles/sample-sensor.yaml'), 'utf8')
      .replace('../templates/sample-sensor.json', join(dir, 'broken-template.json'))
      .replace('../policies/sample-device.json', join(dir, 'broken-policy.json'));
    writeFileSync(join(profiles, 'broken.yaml'), sample);
    writeFileSync(
      join(dir, 'broken-template.json'),
      JSON.stringify({ Parameters: {}, Resources: { thing: { Type: 'AWS::IoT::Nope' } } }),
    );
    writeFileSync(join(dir, 'broken-policy.json'), '{"Statement": [ {"Effect": "Allow", ');
    writeFileSync(own, `profileDirs: [${profiles}]\n`);
    const r = await rehearseCli('examples/rehearse/sensors.csv', 'broken', own);
    expect(r.code, r.stdout + r.stderr).toBe(4);
    const v = json<Verdict>(r);
    expect(v.stack).toBeUndefined();
    const template = v.checks.find((c) => c.name === 'lint: template')!;
    expect(template.ok).toBe(false);
    expect(template.problems!.length).toBeGreaterThan(0);
    const policy = v.checks.find((c) => c.name === 'lint: policy')!;
    expect(policy.ok).toBe(false);
    expect(policy.problems![0]!.message).toMatch(/^the policy is not JSON/);
    expect(existsSync(join(dir, 'broken-template.json'))).toBe(true);
  });

  it(
    'stops everything it started when interrupted (SIGINT) while its station runs: exit 1, the verdict says so, no process, no port, no home left',
    async () => {
      // Its own temporary directory, so the throwaway home can be watched for the station stage.
      const tmp = join(dir, 'tmp');
      mkdirSync(tmp);
      const child = spawn(
        process.execPath,
        [
          BIN,
          'rehearse',
          'examples/rehearse/sensors.csv',
          '--profile',
          'sample-sensor',
          '--config',
          CONFIG,
          '--json',
        ],
        { cwd: ROOT, env: { ...process.env, TMPDIR: tmp }, stdio: ['ignore', 'pipe', 'pipe'] },
      );
      let stdout = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
      try {
        // The station's ports exist once the lot is registered and devices are being plugged in.
        await waitFor(
          'the rehearsal to reach its station',
          () => readdirSync(tmp).some((h) => existsSync(join(tmp, h, 'port1-host'))),
          REHEARSE_BUDGET_MS,
          50,
        );
        child.kill('SIGINT');
        const code = await Promise.race([
          exited,
          new Promise<'late'>((resolve) => setTimeout(() => resolve('late'), 60_000).unref()),
        ]);
        expect(code, stdout).toBe(1);
      } finally {
        child.kill('SIGKILL');
      }
      const v = JSON.parse(stdout) as Verdict;
      expect(v.verdict).toBe('fail');
      expect(v.checks.at(-1)).toMatchObject({ name: 'interrupted', ok: false });
      await expectNothingLeft(v);
      expect(readdirSync(tmp)).toEqual([]);
    },
    REHEARSE_BUDGET_MS + 70_000,
  );
});
