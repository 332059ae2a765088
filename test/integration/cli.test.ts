/** The CLI contract: exit codes, --help everywhere, --version, --json errors. */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import type { Command, CommanderError } from 'commander';
import { describe, expect, it } from 'vitest';
import { CliTimeout, json, runCli } from '../helpers/cli.js';
import { tempDir } from '../helpers/home.js';

describe('CLI contract', () => {
  it('--version prints the package version', async () => {
    const r = await runCli(['--version']);
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
  });

  it('--help works on every command and subcommand', async () => {
    // The binary: exit 0 and the command list, at the top and for a subcommand.
    const top = await runCli(['--help']);
    expect(top.code).toBe(0);
    const commands = [...top.stdout.matchAll(/^ {2}([a-z][a-z-]*)\b/gm)]
      .map((m) => m[1]!)
      .filter((c) => c !== 'help');
    expect(commands).toEqual(expect.arrayContaining(['stack', 'validate', 'profiles']));
    const sub = await runCli(['stack', 'up', '--help']);
    expect(sub.code).toBe(0);
    expect(sub.stdout).toContain('Usage: provline stack up');

    // Every command and subcommand, through the program the binary runs, in this process (a
    // CLI start costs over a second of module loading; this walks the whole tree in one).
    const { buildProgram } = await import('../../src/cli/program.js');
    const paths = (cmd: Command, prefix: string[]): string[][] =>
      cmd.commands
        .filter((c) => c.name() !== 'help')
        .flatMap((c) => [[...prefix, c.name()], ...paths(c, [...prefix, c.name()])]);
    const all = paths(buildProgram(), []);
    expect(all.filter((p) => p.length === 1).map((p) => p[0])).toEqual(commands);
    for (const path of all) {
      let text = '';
      const out = new Writable({
        write(chunk: Buffer, _enc, done) {
          text += chunk.toString();
          done();
        },
      });
      const err: unknown = await buildProgram(out)
        .parseAsync(['node', 'provline', ...path, '--help'])
        .then(
          () => undefined,
          (e: unknown) => e,
        );
      const what = path.join(' ');
      expect((err as CommanderError | undefined)?.code, what).toBe('commander.helpDisplayed');
      expect(text, what).toContain(`Usage: provline ${what}`);
    }
  });

  it('exit 2 for usage errors, with a pointer to --help', async () => {
    const r = await runCli(['validate']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/required (argument|option)/);
    expect((await runCli(['no-such-command'])).code).toBe(2);
    expect((await runCli(['validate', 'x.csv', '--profile', 'demo', '--show', 'many'])).code).toBe(2);
  });

  it('validate: exit 0 when clean, 3 with planted defects at the right lines, JSON shape', async () => {
    const dir = tempDir();
    const good = join(dir, 'good.csv');
    writeFileSync(good, 'serial,hw_rev\nSN1,A\nSN2,B\n');
    const ok = await runCli(['validate', good, '--profile', 'demo']);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toContain('valid, 2 rows');

    const bad = join(dir, 'bad.csv');
    writeFileSync(bad, 'serial,hw_rev\nSN1,A\n,B\nSN1,C\nSN4,has space\nSN5\n');
    const r = await runCli(['validate', bad, '--profile', 'demo', '--json']);
    expect(r.code).toBe(3);
    const out = json<{ valid: boolean; rows: number; problems: Array<Record<string, unknown>> }>(r);
    expect(out.valid).toBe(false);
    expect(out.rows).toBe(5);
    expect(out.problems.map((p) => [p.line, p.column, p.code])).toEqual([
      [3, 'serial', 'SERIAL_EMPTY'],
      [4, 'serial', 'SERIAL_DUPLICATE'],
      [5, 'hw_rev', 'ATTRIBUTE_VALUE_INVALID'],
      [6, null, 'FIELD_COUNT'],
    ]);
    for (const p of out.problems)
      expect(Object.keys(p).sort()).toEqual(['code', 'column', 'hint', 'line', 'message', 'value']);

    const human = await runCli(['validate', bad, '--profile', 'demo', '--show', '2']);
    expect(human.code).toBe(3);
    expect(human.stdout).toContain('line 3, column serial: serial is empty [SERIAL_EMPTY]');
    expect(human.stdout).toContain('… and 2 more');
  });

  it('exit 3 with a typed error for an unknown profile or a missing file', async () => {
    const r = await runCli(['validate', 'nowhere.csv', '--profile', 'demo', '--json']);
    expect(r.code).toBe(3);
    expect(json<{ error: { code: string } }>(r).error.code).toBe('INPUT_UNREADABLE');
    const p = await runCli(['validate', 'nowhere.csv', '--profile', 'nope']);
    expect(p.code).toBe(3);
    expect(p.stderr).toContain('[PROFILE_NOT_FOUND]');
    expect(p.stderr).toContain('hint: Known profiles:');
  });

  it('HSM commands work on a fresh home: the local SoftHSM token is created on demand', async () => {
    const home = tempDir('provline-fresh-');
    const r = await runCli(['hsm', 'info', '--json'], { env: { PROVLINE_HOME: home } });
    expect(r.code, r.stderr).toBe(0);
    expect(json<{ token: { label: string } }>(r).token.label).toBe('provline');
  });

  it('a CLI call past its own budget is reported as a timeout with the command, the time and its output (was: exit 128)', async () => {
    // The stand-in runs in the foreground until stopped: it never exits by itself.
    const dir = tempDir();
    // Its own home and key pair: the stand-in must not depend on a stack left in the default home.
    const env = {
      PROVLINE_HOME: join(dir, 'home'),
      AWS_ACCESS_KEY_ID: 'AKIAPROVLINECLITEST1',
      AWS_SECRET_ACCESS_KEY: 'provline/cli/test/secret',
    };
    const err = await runCli(['emulator', '--state-dir', join(dir, 'state')], { timeoutMs: 2000, env }).then(
      (r) => r,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(CliTimeout);
    const t = err as CliTimeout;
    expect(t.message).toMatch(
      /^provline emulator --state-dir \S+ timed out: still running after \d+ ms \(budget 2000 ms\)/,
    );
    expect(t.message).toContain('--- stdout so far ---');
    expect(t.elapsedMs).toBeGreaterThanOrEqual(2000);
  });

  it('exit 3 for an invalid config, listing each problem', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'provline.config.yaml'), 'hsm:\n  sessions: -1\nredis:\n  url: nope\n');
    const r = await runCli(['profiles'], { cwd: dir });
    expect(r.code).toBe(3);
    expect(r.stderr).toContain('hsm.sessions');
    expect(r.stderr).toContain('redis.url');
  });
});
