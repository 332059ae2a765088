/**
 * Process entry point of the AWS IoT stand-in: `node dist/workers/emulator.js --state-dir DIR …`
 * (see emulator/config.ts for the options). Writes the pid file and, once the listeners are
 * up, the ready file (`{"iotUrl","s3Url","mqttEndpoint","rootCaFile","pid","region","account"}`)
 * and the same line on stdout; stops cleanly on SIGTERM/SIGINT, and when the process that
 * started it with an IPC channel (`provline emulator`) ends.
 */
import { readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { ArgsError, credentialsFromIni, parseArgs, startFaults, startEmulator } from '../emulator/index.js';
import type { Credentials } from '../emulator/index.js';

function atomicWrite(file: string, text: string): void {
  writeFileSync(`${file}.tmp`, text, { mode: 0o600 });
  renameSync(`${file}.tmp`, file);
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  let credentials: Credentials | undefined;
  if (args.credentialsFile) {
    credentials = credentialsFromIni(readFileSync(args.credentialsFile, 'utf8'), args.profile);
    if (!credentials)
      throw new ArgsError(`profile [${args.profile}] with a key pair not found in ${args.credentialsFile}`);
  } else if (process.env.AWS_ACCESS_KEY_ID && process.env.AWS_SECRET_ACCESS_KEY) {
    credentials = {
      accessKeyId: process.env.AWS_ACCESS_KEY_ID,
      secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY,
    };
  } else {
    throw new ArgsError(
      'no credentials: pass --credentials-file and --profile, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY',
    );
  }
  const faultsJson = args.faults?.startsWith('@') ? readFileSync(args.faults.slice(1), 'utf8') : args.faults;
  if (args.pidFile) atomicWrite(args.pidFile, `${process.pid}\n`);
  const emulator = await startEmulator({
    stateDir: args.stateDir,
    host: args.host,
    port: args.port,
    s3Port: args.s3Port,
    mqttPort: args.mqttPort,
    region: args.region,
    account: args.account,
    credentials: [credentials],
    fsync: args.fsync,
    faults: startFaults(faultsJson, args.seed, args.linesPerSecond),
    buckets: args.buckets,
    lambdas: args.lambdas,
  });
  const ready = {
    iotUrl: emulator.iotUrl,
    s3Url: emulator.s3Url,
    mqttEndpoint: emulator.mqttEndpoint,
    rootCaFile: emulator.rootCaFile,
    pid: process.pid,
    region: emulator.region,
    account: emulator.account,
  };
  let stopping = false;
  const stop = (): void => {
    if (stopping) return;
    stopping = true;
    emulator
      .close()
      .then(() => {
        if (args.readyFile) rmSync(args.readyFile, { force: true });
        if (args.pidFile) rmSync(args.pidFile, { force: true });
        process.exit(0);
      })
      .catch((e: unknown) => {
        process.stderr.write(`provline emulator: ${(e as Error).message}\n`);
        process.exit(1);
      });
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  // Started by `provline emulator` with an IPC channel: it stops when that process ends.
  if (process.send) process.once('disconnect', stop);
  // Ready only now: a SIGTERM sent as soon as the ready line is read finds the handlers in place.
  if (args.readyFile) atomicWrite(args.readyFile, `${JSON.stringify(ready)}\n`);
  process.stdout.write(`${JSON.stringify(ready)}\n`);
}

main().catch((e: unknown) => {
  process.stderr.write(
    `provline emulator: ${e instanceof ArgsError ? e.message : ((e as Error).stack ?? String(e))}\n`,
  );
  process.exit(e instanceof ArgsError ? 2 : 1);
});
