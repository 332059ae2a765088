import type { Command } from 'commander';
import { getProfile } from '../../config/index.js';
import { validateCsvFile } from '../../batch/index.js';
import type { Problem } from '../../batch/index.js';
import { EXIT, ExitCode } from '../exit.js';
import type { CommandContext } from '../context.js';
import { intOption } from '../options.js';

export function registerValidate(program: Command, ctx: () => CommandContext): void {
  program
    .command('validate')
    .description('Check a CSV batch against a profile and report every problem with its line')
    .argument('<csv>', 'CSV file: a header row with a "serial" column, then one row per device')
    .requiredOption('-p, --profile <name>', 'product profile (see `provline profiles`)')
    .option('--json', 'print the result as JSON')
    .option('--show <n>', 'problems to list in human output (all are counted)', intOption('--show', 1), 20)
    .addHelpText('after', '\nExit codes: 0 the file is valid, 3 it has problems.\n')
    .action(async (csv: string, opts: { profile: string; json?: boolean; show: number }) => {
      const c = ctx();
      const profile = getProfile(c.loaded, opts.profile);
      const result = await validateCsvFile(csv, profile);
      if (opts.json) {
        c.json({
          valid: result.valid,
          rows: result.rows,
          validRows: result.validRows,
          problemCount: result.problemCount,
          truncated: result.problemCount > result.problems.length,
          problems: result.problems,
        });
      } else if (result.valid) {
        c.print(`${csv}: valid, ${result.rows} row${result.rows === 1 ? '' : 's'} (profile ${profile.name})`);
      } else {
        const lines = [
          `${csv}: ${result.problemCount} problem${result.problemCount === 1 ? '' : 's'} in ${result.rows} row${result.rows === 1 ? '' : 's'} (profile ${profile.name})`,
        ];
        for (const p of result.problems.slice(0, opts.show)) lines.push(...formatProblem(p));
        const more = result.problemCount - Math.min(opts.show, result.problems.length);
        if (more > 0) lines.push(`  … and ${more} more (use --json for the list, or --show <n>)`);
        c.print(lines.join('\n'));
      }
      if (!result.valid) throw new ExitCode(EXIT.invalidInput);
    });
}

export function formatProblem(p: Problem): string[] {
  const where = `line ${p.line}${p.column ? `, column ${p.column}` : ''}`;
  const out = [`  ${where}: ${p.message} [${p.code}]`];
  if (p.value !== null) out.push(`      value: "${p.value}"`);
  out.push(`      hint:  ${p.hint}`);
  return out;
}
