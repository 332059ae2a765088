/**
 * The verdict of `provline rehearse` as plain data, and its two renderings: the JSON document
 * and a JUnit XML file (one testsuite, a testcase per check and per serial). Also the lot's
 * deterministic sample, and the verdict of one serial from what the line found. Pure: no I/O.
 */
import type { DeviceRecord, Problem } from '../../batch/index.js';
import type { SerialOutcome } from '../../cloud/index.js';
import type { DeviceResult } from '../../flash/index.js';

export interface Check {
  /** `lint: template`, `csv: validation`, `hsm stage`, … */
  name: string;
  ok: boolean;
  /** Skipped because an earlier check failed. */
  skipped?: boolean;
  message: string;
  /** Line-numbered CSV problems, template or policy problems. */
  problems?: Array<Problem | { path?: string; message: string }>;
  ms?: number;
}

export interface DeviceVerdict {
  serial: string;
  /** The CSV line of the serial in the user's file. */
  line: number;
  ok: boolean;
  state: string;
  thingName?: string;
  certificateId?: string;
  /** Seen by the stand-in connecting as its thing (where the profile wants a first connect). */
  connected?: boolean;
  /** A claim lot: what the hook made of the serial (provisioned, denied, not seen). */
  claim?: 'provisioned' | 'denied' | 'not seen';
  /** For a denied serial: the hook's reason (`NOT_IN_LOT: …`). */
  claimReason?: string;
  code?: string;
  message: string;
  ms?: number;
}

export interface Verdict {
  verdict: 'pass' | 'fail';
  csv: string;
  profile: string;
  strategy: string;
  driver: string;
  rows: number;
  sampled: number;
  checks: Check[];
  devices: DeviceVerdict[];
  /** The throwaway stack, for the record: its processes and ports, all stopped afterwards. */
  stack?: { processes: Array<{ pid: number; name: string }>; ports: number[]; stopped: boolean };
  elapsedMs: number;
}

export function verdictOf(checks: readonly Check[], devices: readonly DeviceVerdict[]): 'pass' | 'fail' {
  return checks.every((c) => c.ok) && devices.every((d) => d.ok) ? 'pass' : 'fail';
}

/** What the line found out about one serial of the sample. */
export interface SerialFindings {
  serial: string;
  line: number;
  /** Whether the profile wants a first connect (`station.firstConnect` not false). */
  wantsConnect: boolean;
  /** The journal's record after the line. */
  record: DeviceRecord | undefined;
  /** The station's result of the device's visit, if it came. */
  result: DeviceResult | undefined;
  /** Seen by the stand-in connecting as its thing. */
  seen: boolean;
  /** A claim lot: what the hook made of the serial. */
  claim?: SerialOutcome | undefined;
}

/**
 * One serial's verdict: it passes when it is connected and seen by the stand-in (or verified,
 * where the profile wants no first connect) and, in a claim lot, the hook provisioned it. A
 * failure says why: the hook's denial, why a claim device never came to the hook, the
 * journal's error, or the station's result.
 */
export function deviceVerdict(f: SerialFindings): DeviceVerdict {
  const { record: rec, result, claim } = f;
  const state = rec?.state ?? 'unknown';
  const ok =
    (f.wantsConnect ? state === 'connected' && f.seen : state === 'verified') &&
    (!claim || claim.claim === 'provisioned');
  const why = rec?.error
    ? `${rec.error.message} (stage ${rec.error.stage})`
    : result
      ? result.message
      : state === 'connected'
        ? `the device reported CONNACK 0, but the stand-in's events log has no connect of ${rec!.thingName}`
        : `no station result in time; the journal says ${state}`;
  const message = ok
    ? claim
      ? `provisioned itself through the hook (certificate ${claim.certificateId?.slice(0, 12) ?? ''}…) and connected to the stand-in as ${rec!.thingName}`
      : f.wantsConnect
        ? `verified by its own answers and connected to the stand-in as ${rec!.thingName}`
        : 'verified by its own answers (the profile wants no first connect)'
    : claim?.claim === 'denied'
      ? `denied by the hook: ${claim.reason}`
      : claim?.claim === 'not seen'
        ? `never came to the hook: ${why}`
        : why;
  return {
    serial: f.serial,
    line: f.line,
    ok,
    state,
    ...(rec?.thingName ? { thingName: rec.thingName } : {}),
    ...(rec?.fields.certificateId ? { certificateId: rec.fields.certificateId } : {}),
    ...(f.wantsConnect ? { connected: f.seen } : {}),
    ...(claim ? { claim: claim.claim, ...(claim.reason ? { claimReason: claim.reason } : {}) } : {}),
    ...(ok
      ? {}
      : {
          code:
            rec?.error?.code ??
            result?.code ??
            (claim?.claim === 'denied' ? 'DEVICE_PROVISION_DENIED' : 'NOT_DONE'),
        }),
    message,
    ...(result ? { ms: result.ms } : {}),
  };
}

/**
 * `n` of `total` row indexes, evenly spread over the lot and always the same for the same
 * lot: the first row, then every (total/n)-th. `n` at or above `total` is the whole lot.
 */
export function sampleIndexes(total: number, n: number | undefined): number[] {
  if (n === undefined || n >= total) return Array.from({ length: total }, (_, i) => i);
  return Array.from({ length: n }, (_, k) => Math.floor((k * total) / n));
}

/** A problem as one line: `line 4, column serial: … [CODE] (value "…")`. */
export function problemLine(p: Problem | { path?: string; message: string }): string {
  if ('line' in p)
    return `line ${p.line}${p.column ? `, column ${p.column}` : ''}: ${p.message} [${p.code}]${p.value !== null ? ` (value "${p.value}")` : ''}${p.hint ? `; ${p.hint}` : ''}`;
  return `${p.path ? `${p.path}: ` : ''}${p.message}`;
}

const esc = (s: string): string =>
  s
    // Characters XML 1.0 cannot carry at all are dropped; the rest are escaped.
    // eslint-disable-next-line no-control-regex -- exactly the characters XML forbids
    .replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\ufffe\uffff]/g, '')
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;');

const seconds = (ms: number | undefined): string => ((ms ?? 0) / 1000).toFixed(3);

/**
 * JUnit XML as the common readers take it (Jenkins, GitLab, GitHub test reporters): one
 * testsuite named after the profile, a testcase per check (classname `rehearse.checks`) and per
 * serial (`rehearse.devices`), a `failure` with the message and, in its body, every problem.
 */
export function junitXml(v: Verdict): string {
  const cases: string[] = [];
  let failures = 0;
  let skipped = 0;
  for (const c of v.checks) {
    const body = [c.message, ...(c.problems ?? []).map(problemLine)].join('\n');
    let inner = '';
    if (c.skipped) {
      skipped++;
      inner = `\n      <skipped message="${esc(c.message)}"/>\n    `;
    } else if (!c.ok) {
      failures++;
      inner = `\n      <failure message="${esc(c.message)}" type="check">${esc(body)}</failure>\n    `;
    } else if (c.problems?.length) inner = `\n      <system-out>${esc(body)}</system-out>\n    `;
    cases.push(
      `    <testcase classname="rehearse.checks" name="${esc(c.name)}" time="${seconds(c.ms)}">${inner}</testcase>`,
    );
  }
  for (const d of v.devices) {
    const inner = d.ok
      ? ''
      : `\n      <failure message="${esc(d.message)}" type="${esc(d.code ?? d.state)}">${esc(
          `serial ${d.serial} (CSV line ${d.line}) ended ${d.state}${d.code ? ` [${d.code}]` : ''}: ${d.message}`,
        )}</failure>\n    `;
    if (!d.ok) failures++;
    cases.push(
      `    <testcase classname="rehearse.devices" name="${esc(`serial ${d.serial}`)}" time="${seconds(d.ms)}">${inner}</testcase>`,
    );
  }
  const tests = v.checks.length + v.devices.length;
  const name = `provline rehearse ${v.profile}`;
  return [
    '<?xml version="1.0" encoding="UTF-8"?>',
    `<testsuites name="${esc(name)}" tests="${tests}" failures="${failures}" errors="0" skipped="${skipped}" time="${seconds(v.elapsedMs)}">`,
    `  <testsuite name="${esc(name)}" tests="${tests}" failures="${failures}" errors="0" skipped="${skipped}" time="${seconds(v.elapsedMs)}">`,
    '    <properties>',
    `      <property name="csv" value="${esc(v.csv)}"/>`,
    `      <property name="profile" value="${esc(v.profile)}"/>`,
    `      <property name="strategy" value="${esc(v.strategy)}"/>`,
    `      <property name="driver" value="${esc(v.driver)}"/>`,
    `      <property name="rows" value="${v.rows}"/>`,
    `      <property name="sampled" value="${v.sampled}"/>`,
    '    </properties>',
    ...cases,
    '  </testsuite>',
    '</testsuites>',
    '',
  ].join('\n');
}
