/**
 * The template check for a profile, by the flavour its strategy uses: the AWS evaluator's lint
 * for bulk and RegisterThing templates, the JITP lint (what AWS fills in from the device
 * certificate's subject) for JITP, nothing for a strategy that uses no template (JITR). Pure.
 */
import { lintTemplate } from './evaluate.js';
import { lintJitpTemplate } from './jitp-lint.js';
import type { TemplateFlavor } from './types.js';

export interface ProfileTemplateProblem {
  path: string;
  message: string;
}

/** The subject attributes a profile's device certificates carry: CN (the thing name) and csrSubject. */
export function deviceSubjectAttributes(profile: { csrSubject: Record<string, string> }): string[] {
  return ['CN', ...Object.keys(profile.csrSubject)];
}

export function lintProfileTemplate(
  body: string,
  flavor: TemplateFlavor | undefined,
  profile: { csrSubject: Record<string, string> },
): ProfileTemplateProblem[] {
  if (flavor === undefined) return [];
  if (flavor === 'jitp') return lintJitpTemplate(body, deviceSubjectAttributes(profile));
  return lintTemplate(body, flavor).map((e) => ({ path: e.path, message: e.message }));
}
