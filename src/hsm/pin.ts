/**
 * Where the user PIN comes from: the environment variable named by `hsm.pinEnv`, else the pin
 * file. Read only at login and never stored, logged, put in argv, errors, Redis or job data.
 */
import { readFileSync } from 'node:fs';
import { ProvlineError } from '../core/index.js';

export interface PinSource {
  pinFile: string | undefined;
  pinEnv: string;
  /** Why no default pin file applies, when the settings know (see HsmSettings.pinNote). */
  pinNote?: string;
}

export function readPin(source: PinSource, env: NodeJS.ProcessEnv = process.env): string {
  const fromEnv = env[source.pinEnv];
  if (fromEnv !== undefined && fromEnv !== '') return fromEnv;
  if (source.pinFile === undefined) {
    const looked = `looked for the environment variable ${source.pinEnv} (${fromEnv === '' ? 'empty' : 'not set'}) and hsm.pinFile / PROVLINE_HSM_PIN_FILE (not set)`;
    throw new ProvlineError(
      'HSM_PIN_MISSING',
      `no HSM user PIN: ${source.pinNote ? `${source.pinNote}; ` : ''}${looked}`,
      {
        kind: 'invalid-input',
        hint: source.pinNote
          ? `Unset SOFTHSM2_CONF to use the local stack's token, or set hsm.pinFile (PROVLINE_HSM_PIN_FILE) to a 0600 file holding that token's user PIN, or export ${source.pinEnv}.`
          : `Set hsm.pinFile (PROVLINE_HSM_PIN_FILE) to a 0600 file holding the PIN, or export ${source.pinEnv}.`,
      },
    );
  }
  let text: string;
  try {
    text = readFileSync(source.pinFile, 'utf8');
  } catch (e) {
    throw new ProvlineError('HSM_PIN_FILE_UNREADABLE', `cannot read the HSM pin file ${source.pinFile}`, {
      kind: 'invalid-input',
      cause: e,
      hint: 'Check hsm.pinFile and its permissions.',
    });
  }
  const pin = text.replace(/\r?\n$/, '');
  if (pin === '')
    throw new ProvlineError('HSM_PIN_MISSING', `the HSM pin file ${source.pinFile} is empty`, {
      kind: 'invalid-input',
    });
  return pin;
}
