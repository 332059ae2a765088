/**
 * `provline cert deactivate|revoke|activate <serial>`: one device's certificate off or on again
 * in AWS IoT, found through the journal (any strategy). For a certificate the factory CA signed
 * offline that AWS has not seen yet, provline registers it with the new status, so the device's
 * first connect is refused (docs/operations.md "Revoking a device").
 */
import type { Command } from 'commander';
import { makeClients, setDeviceCertificateStatus, type DeviceCertificateStatus } from '../../cloud/index.js';
import { ProvlineError } from '../../core/index.js';
import type { CommandContext } from '../context.js';
import { openPipeline } from '../pipeline/open.js';

const ACTIONS: ReadonlyArray<[string, DeviceCertificateStatus, string]> = [
  ['deactivate', 'INACTIVE', "Deactivate a device's certificate (INACTIVE; reversible with activate)"],
  [
    'revoke',
    'REVOKED',
    "Revoke a device's certificate (REVOKED: a device stolen, scrapped or returned for good)",
  ],
  ['activate', 'ACTIVE', "Activate a device's certificate again after deactivate"],
];

export function registerCert(program: Command, ctx: () => CommandContext): void {
  const cert = program
    .command('cert')
    .description("One device's certificate in AWS IoT: deactivate, revoke, activate")
    .addHelpText(
      'after',
      '\nAWS IoT disconnects a connected device within minutes of its certificate leaving ACTIVE.\nExit codes: 0 done (or already so), 3 no such serial / no certificate, 1 AWS could not be reached.\n',
    );
  for (const [name, status, description] of ACTIONS)
    cert
      .command(name)
      .description(description)
      .argument('<serial>', 'the device serial')
      .option('--json', 'print as JSON')
      .action(async (serial: string, opts: { json?: boolean }) => {
        const c = ctx();
        const p = await openPipeline(c);
        try {
          const rec = await p.journal.get(serial);
          if (!rec)
            throw new ProvlineError('SERIAL_NOT_FOUND', `no batch holds the serial ${serial}`, {
              kind: 'invalid-input',
            });
          if (!rec.fields.certificatePem)
            throw new ProvlineError(
              'CERT_NOT_ISSUED',
              `device ${serial} (batch ${rec.batch}, ${rec.state}) has no certificate yet`,
              { kind: 'invalid-input' },
            );
          const cloud = makeClients(c.runtime.aws);
          try {
            const r = await setDeviceCertificateStatus(cloud, {
              certificatePem: rec.fields.certificatePem,
              status,
            });
            if (opts.json) return c.json({ serial, batchId: rec.batch, thingName: rec.thingName, ...r });
            c.print(
              r.before === r.after
                ? `device ${serial}: certificate ${r.certificateId} is already ${r.after}`
                : r.registered
                  ? `device ${serial}: certificate ${r.certificateId} registered ${r.after} under its factory CA before the device's first connect; AWS will refuse it`
                  : `device ${serial}: certificate ${r.certificateId} ${r.before} → ${r.after}`,
            );
          } finally {
            cloud.destroy();
          }
        } finally {
          await p.close();
        }
      });
}
