import type { Command } from 'commander';
import { parseKekFile } from '../../hsm/index.js';
import { readFileSync } from 'node:fs';
import { InvalidArgumentError, Option } from 'commander';
import { ProvlineError, messageOf } from '../../core/index.js';
import { DRIVERS, type DriverName } from '../../config/index.js';
import type { CommandContext } from '../context.js';
import { intOption } from '../options.js';

interface DeviceSimOptions {
  driver: DriverName;
  port: string;
  serial?: string;
  imei?: string;
  baud: number;
  throttle: boolean;
  faults?: string;
  kekFile?: string;
  network: boolean;
  json?: boolean;
  verbose?: boolean;
}

export function registerDeviceSim(program: Command, ctx: () => CommandContext): void {
  program
    .command('device-sim')
    .description('Simulate a device on a serial port (one end of a pty pair) until SIGINT/SIGTERM')
    .addOption(
      new Option('--driver <driver>', 'the command set to speak').choices([...DRIVERS]).makeOptionMandatory(),
    )
    .requiredOption('--port <path>', "the device's end of the link, e.g. a socat pty link")
    .option('--serial <serial>', 'the serial a provline-serial-v1 device reports (default SIM0001)')
    .option('--imei <imei>', 'the 15-digit IMEI a nordic-at modem reports (default 352656100000001)')
    .option(
      '--baud <n>',
      'line rate to pace both directions at (8N1: baud/10 bytes per second)',
      intOption('--baud', 300, 4_000_000),
      115_200,
    )
    .option('--no-throttle', 'answer as fast as the pty goes (functional tests)')
    .option(
      '--faults <spec>',
      'faults to inject, e.g. "cme527,hang@write,drop@read,corrupt@write,noise@read,unplug@write#2"',
      (v) => {
        const refused = ctx().entries.devices.checkFaults(v);
        if (refused) throw new InvalidArgumentError(refused);
        return v;
      },
    )
    .option('--kek-file <file>', 'provline-serial-v1: raw 32-byte AES-256 KEK for unwrapping wrapped keys')
    .option(
      '--no-network',
      'provline-serial-v1: firmware without a network link (CONNECT is not offered; the first connect is refused)',
    )
    .option('--json', 'print events as JSON lines')
    .option('--verbose', 'print every injected fault')
    .addHelpText(
      'after',
      '\nFault spec: <kind>[:<count>|:*][@<category>][#<nth>], comma-separated; kinds reject (cme527), hang, drop, corrupt, noise, unplug, impostor;\ncategories identity, write, read, keygen, pop, connect, control. See docs/device-protocol.md.\n',
    )
    .action(async (opts: DeviceSimOptions) => {
      const c = ctx();
      const serial =
        opts.driver === 'nordic-at'
          ? (opts.imei ?? opts.serial ?? '352656100000001')
          : (opts.serial ?? opts.imei ?? 'SIM0001');
      if (opts.driver === 'nordic-at' && !/^\d{15}$/.test(serial)) {
        throw new ProvlineError('USAGE', `an IMEI is 15 digits, got "${serial}"`, { kind: 'usage' });
      }
      let kek: Buffer | undefined;
      if (opts.kekFile) {
        kek = parseKekFile(readFileSync(opts.kekFile));
      }
      const emit = (event: string, data: Record<string, unknown>, text: string): void => {
        if (opts.json) c.out.write(`${JSON.stringify({ event, ...data })}\n`);
        else c.print(text);
      };
      const baudRate = opts.throttle ? opts.baud : 0;
      const sim = await c.entries.devices
        .start({
          driver: opts.driver,
          port: opts.port,
          serial,
          baudRate,
          ...(opts.faults ? { faults: opts.faults } : {}),
          ...(kek ? { kek } : {}),
          ...(opts.network ? {} : { network: false }),
          ...(opts.verbose ? { log: (line: string) => emit('log', { line }, `device-sim: ${line}`) } : {}),
        })
        .catch((e: unknown) => {
          throw new ProvlineError('TRANSPORT_OPEN_FAILED', `cannot open ${opts.port}: ${messageOf(e)}`, {
            cause: e,
            hint: 'start socat first and pass the pty link path',
          });
        });
      emit(
        'ready',
        { driver: opts.driver, serial, port: opts.port, baud: baudRate || null, faults: opts.faults ?? null },
        `device-sim: ${opts.driver} ${serial} on ${opts.port} (${baudRate ? `${baudRate} baud` : 'unthrottled'}${opts.faults ? `, faults ${opts.faults}` : ''})`,
      );
      const reason = await new Promise<string>((resolve) => {
        const onSignal = (sig: NodeJS.Signals): void => resolve(sig);
        process.once('SIGINT', onSignal);
        process.once('SIGTERM', onSignal);
        void sim.unplugged.then(() => resolve('unplugged'));
      });
      await sim.close();
      emit(
        'stopped',
        { reason, ...sim.stats },
        `device-sim: stopped (${reason}); ${sim.stats.commands} commands, ${sim.stats.bytesIn} bytes in, ${sim.stats.bytesOut} out`,
      );
    });
}
