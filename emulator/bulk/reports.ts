/**
 * Bulk-registration report lines and input-line parsing (pure).
 *
 * ERRORS lines follow the observed AWS format (aws-iot.md §1.3):
 *   {"errorMessage":"com.amazonaws.services.iot.model.X: … (Service: AWSIot; …)","lineNumber":1,"offset":70,"response":null}
 * RESULTS lines use the same envelope with errorMessage null and the RegisterThing result in
 * `response` ({certificatePem, resourceArns}) — an assumption (UNDOCUMENTED), see
 * docs/emulator.md. `offset` is the byte offset just past the line's newline (the start of
 * the next line), which matches the observed sample.
 */
import { invalid } from '../errors.js';

export const REPORT_TYPES = ['ERRORS', 'RESULTS'] as const;
export type ReportType = (typeof REPORT_TYPES)[number];

/** Lines per report part (`<taskId>-1`, `<taskId>-2`, …). */
export const REPORT_PART_LINES = 10_000;

/** Max input line length (DG-2019: 256K). */
export const MAX_LINE_BYTES = 256 * 1024;

export function resultLine(
  lineNumber: number,
  offset: number,
  response: { certificatePem?: string; resourceArns: Record<string, string> },
): string {
  return `${JSON.stringify({ errorMessage: null, lineNumber, offset, response })}\n`;
}

export function errorLine(lineNumber: number, offset: number, errorMessage: string): string {
  return `${JSON.stringify({ errorMessage, lineNumber, offset, response: null })}\n`;
}

/**
 * One input line → template parameters. Values must be scalars; numbers and booleans are
 * turned into strings (OBSERVED plausible, aws-iot.md §1.2).
 */
export function lineParameters(text: string): Record<string, string> {
  if (Buffer.byteLength(text) > MAX_LINE_BYTES)
    throw invalid(`The input line is longer than the maximum of ${MAX_LINE_BYTES} bytes.`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw invalid(`The input line is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
    throw invalid('The input line must be a JSON object of parameter values.');
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(parsed)) {
    if (typeof v === 'string') out[k] = v;
    else if (typeof v === 'number' || typeof v === 'boolean') out[k] = String(v);
    else throw invalid(`The value of parameter ${k} must be a string.`);
  }
  return out;
}

/** Splits report text into parts of REPORT_PART_LINES lines. */
export function reportParts(text: string, linesPerPart = REPORT_PART_LINES): string[] {
  if (!text) return [];
  const lines = text.split('\n').filter((l) => l.length > 0);
  const parts: string[] = [];
  for (let i = 0; i < lines.length; i += linesPerPart)
    parts.push(`${lines.slice(i, i + linesPerPart).join('\n')}\n`);
  return parts;
}
