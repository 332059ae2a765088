/**
 * What a claim profile's fleet template must offer (pure): it is a valid fleet template, it
 * declares the serial parameter the devices send, and every parameter the hook sets from the
 * CSV row (the profile's `parameters`) — a parameter the template does not declare would be
 * dropped or refused, and the thing would not get what the lot says.
 */
import { lintTemplate } from '../template/index.js';

export function claimTemplateProblems(
  templateBody: string,
  hookParameters: readonly string[],
  serialParameter: string,
  lotParameter?: string,
): string[] {
  const problems = lintTemplate(templateBody, 'fleet').map((p) => p.message);
  if (problems.length) return problems;
  let declared: string[] = [];
  try {
    const t = JSON.parse(templateBody) as { Parameters?: Record<string, unknown> };
    declared = Object.keys(t.Parameters ?? {});
  } catch {
    return ['the template is not JSON'];
  }
  const wanted = [serialParameter, ...(lotParameter ? [lotParameter] : []), ...hookParameters];
  const missing = [...new Set(wanted)].filter((p) => !declared.includes(p));
  const why = (p: string): string =>
    p === serialParameter
      ? ' (the serial the devices send, claim.serialParameter)'
      : p === lotParameter
        ? ' (the lot the devices send, claim.lotParameter)'
        : ' (the hook sets it from the CSV row: profile parameters)';
  return missing.map(
    (p) => `the template declares no parameter ${p}${why(p)}; declared: ${declared.join(', ') || 'none'}`,
  );
}
