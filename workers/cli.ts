/**
 * The provline process (bin/provline.js starts it): runs the command line through the CLI
 * (src/cli), handing it the entry points its commands call, and exits with the code the CLI
 * returns. Each entry point is loaded when a command first uses it: `provline validate` loads
 * neither the station nor the simulators.
 */
import 'reflect-metadata';
import type { Entries } from '../src/cli/index.js';
import { runCli } from '../src/cli/index.js';
import { simulatedDevices } from './devices.js';

// The AWS SDK warns that versions published after January 2027 will need Node 22; provline pins
// its SDK version and supports Node 20, so the warning is noise for operators.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

// `provline report … | head`: a closed pipe ends the output, not the process with a trace.
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code === 'EPIPE') process.exit(0);
  throw e;
});

const entries: Entries = {
  pipelineWorker: async (o) => (await import('./pipeline.js')).runPipelineWorker(o),
  station: async (o) => (await import('./station.js')).runStationDaemon(o),
  jitrActivator: async (o) => (await import('./jitr-activator.js')).runJitrActivator(o),
  devices: simulatedDevices,
};

const code = await runCli(process.argv, entries);
// Let stdout drain before exiting; pending handles (pools, sockets) must not keep us alive.
process.stdout.write('', () => process.exit(code));
