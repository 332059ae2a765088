/** `provline demo` at a small size, so the README's first command cannot silently rot. */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.js';
import { removeHome, tempDir } from '../helpers/home.js';

/** Every file under `dir`, recursively. */
function files(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? files(join(dir, e.name)) : [join(dir, e.name)],
  );
}

/** The budget of one `provline demo` run at this size on a busy machine. */
const DEMO_BUDGET_MS = 150_000;

describe('provline demo', () => {
  const home = tempDir('provline-demo-');
  afterAll(() => removeHome(home));

  // One scenario in two steps, each on its own budget: the second run needs the first one's home.
  it(
    'takes the four products (bulk with wrapped keys, bulk with plain keys, JITP, fleet provisioning by claim, plus one claim sensor provisioned by trusted user) from CSV to devices verified by their own answers and connected to the stand-in as their things, stops what it started, and runs again on the same home with new serials (idempotent KEKs and token)',
    async () => {
      const r = await runCli(['demo', '--devices', '8', '--ports', '2'], {
        env: { PROVLINE_HOME: home },
        timeoutMs: DEMO_BUDGET_MS,
      });
      expect(r.code, r.stdout + r.stderr).toBe(0);
      expect(r.stdout).toContain(
        "8 of 8 devices verified by the devices themselves; 8 of 8 connected to the stand-in's MQTT endpoint",
      );
      expect(r.stdout).toMatch(/profile demo \(provline-serial-v1\)/);
      expect(r.stdout).toMatch(/profile nrf91-plain \(nordic-at\)/);
      expect(r.stdout).toMatch(/profile sensor-jitp \(provline-serial-v1\)/);
      expect(r.stdout).toMatch(/profile sensor-claim \(provline-serial-v1\)/);
      expect(r.stdout).toContain('allow-list of the claim lot published for the hook: 2 serials');
      // Provisioning by trusted user: a temporary claim from CreateProvisioningClaim, the device
      // provisioned with it through the hook, then connected as its thing.
      const trusted =
        /temporary claim [0-9a-f]{16}… expires (\S+); device (TRUST\d+-0001) provisioned itself with it through the hook as thing (claim-TRUST\d+-0001) \(certificate [0-9a-f]{16}…\) and connected/.exec(
          r.stdout,
        );
      expect(trusted, r.stdout).not.toBeNull();
      expect(Date.parse(trusted![1]!)).toBeGreaterThan(Date.now() - 5 * 60_000);
      // The JITP things appear only when their devices first connect.
      expect(r.stdout).toContain('JITP lot: 0 of 2 things in the registry');
      expect(r.stdout).toContain('JITP lot: 2 of 2 things in the registry now');

      const reports = files(join(home, 'demo')).filter((f) => /report-.*\.csv$/.test(f));
      expect(reports).toHaveLength(4);
      const rows = reports.flatMap((f) => readFileSync(f, 'utf8').trim().split('\n').slice(1));
      expect(rows).toHaveLength(8);
      for (const row of rows) expect(row.split(',')[3]).toBe('connected');
      // The other end agrees: the stand-in's events log (kept in its state directory) saw each
      // thing connect with the certificate the journal holds for it.
      const log = readFileSync(join(home, 'aws/state/events.ndjson'), 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { kind: string; clientId?: string; certificateId?: string });
      expect(
        log.some((e) => e.kind === 'connect.accepted' && e.clientId === trusted![3]),
        `${trusted![3]} connected`,
      ).toBe(true);
      for (const row of rows) {
        const [, , thingName, , certificateId] = row.split(',');
        expect(
          log.some(
            (e) =>
              e.kind === 'connect.accepted' && e.clientId === thingName && e.certificateId === certificateId,
          ),
          `${thingName} connected`,
        ).toBe(true);
      }

      // No secret in the output, and no plaintext device key anywhere in the home. (The stand-in
      // keeps the key of its own certificate-issuing CA under aws/state/ca: that is AWS's side.)
      const pin = readFileSync(join(home, 'hsm/user.pin'), 'utf8').trim();
      expect(r.stdout + r.stderr).not.toContain(pin);
      expect(r.stdout + r.stderr).not.toContain('PRIVATE KEY');
      const ours = files(home).filter((x) => !x.includes('/aws/state/ca/') && statSync(x).size < 50_000_000);
      expect(ours.length).toBeGreaterThan(10);
      for (const f of ours) expect(readFileSync(f).includes('PRIVATE KEY-----'), f).toBe(false);
      expect(statSync(join(home, 'demo/demo-kek.bin')).mode & 0o777).toBe(0o600);

      const status = await runCli(['stack', 'status', '--json'], { env: { PROVLINE_HOME: home } });
      expect(JSON.parse(status.stdout).redis.running).toBe(false);

      const again = await runCli(['demo', '--devices', '3', '--ports', '2'], {
        env: { PROVLINE_HOME: home },
        timeoutMs: DEMO_BUDGET_MS,
      });
      expect(again.code, again.stdout + again.stderr).toBe(0);
      expect(again.stdout).toContain('3 of 3 devices verified by the devices themselves; 3 of 3 connected');
    },
    3 * DEMO_BUDGET_MS,
  );
});
