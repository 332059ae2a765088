/**
 * Fault injection for device simulators. A spec is a comma-separated list of
 *
 *     <kind>[:<count>|:*][@<category>][#<nth>]
 *
 *   kind      reject (alias cme527) · hang · drop · corrupt · noise · unplug · impostor
 *   count     how many matching commands to affect (default 1; `*` = every one)
 *   category  identity · write · read · keygen · pop · connect · control (default per kind, below)
 *   nth       skip the first nth-1 matching commands (default 1 = the first one)
 *
 *   reject   answers the command with the device's "content rejected" error instead of running
 *            it: `+CME ERROR: 527` on nordic-at, CONTENT_REJECTED on COMMIT in serial-v1 (write)
 *   hang     swallows the command: no answer at all (write)
 *   drop     runs the command but loses 3 bytes from the middle of its answer (read)
 *   corrupt  flips one bit in the middle of the command as received, before the device parses
 *            it: line noise on the way in (write)
 *   noise    runs the command, then flips one bit in the middle of its answer: line noise on
 *            the way out, which the station must catch (a CRC, a hash that no longer matches)
 *            (read)
 *   unplug   the device disappears as the command arrives: port closed, nothing stored (write)
 *   impostor provisions itself by claim presenting a serial outside its lot: every fleet
 *            parameter that holds its own serial carries `<serial>-IMPOSTOR` instead, so the
 *            hook sees a serial no lot lists (provline-serial-v1's PROVISION only) (connect)
 *
 * Examples: `cme527` · `hang@write` · `drop:2@read` · `corrupt:*@write` · `noise@read` ·
 * `unplug@write#2` · `impostor`.
 */

export const FAULT_KINDS = ['reject', 'hang', 'drop', 'corrupt', 'noise', 'unplug', 'impostor'] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];
export const CATEGORIES = ['identity', 'write', 'read', 'keygen', 'pop', 'connect', 'control'] as const;
export type Category = (typeof CATEGORIES)[number];

const DEFAULT_CATEGORY: Record<FaultKind, Category> = {
  reject: 'write',
  hang: 'write',
  drop: 'read',
  corrupt: 'write',
  noise: 'read',
  unplug: 'write',
  impostor: 'connect',
};

/** The serial an `impostor` device presents instead of its own. */
export const impostorSerial = (serial: string): string => `${serial}-IMPOSTOR`;
const ALIASES: Record<string, FaultKind> = { cme527: 'reject' };

export interface FaultRule {
  kind: FaultKind;
  category: Category;
  /** Remaining commands to affect; Infinity for `*`. */
  remaining: number;
  /** Matching commands still to let through before the first one is affected. */
  skip: number;
}

export class FaultSpecError extends Error {}

export function parseFaults(spec: string | undefined): FaultRule[] {
  if (!spec?.trim()) return [];
  return spec.split(',').map((part) => {
    const m = /^([a-z0-9]+)(?::(\d+|\*))?(?:@([a-z]+))?(?:#(\d+))?$/.exec(part.trim());
    if (!m)
      throw new FaultSpecError(`bad fault "${part}": expected <kind>[:<count>|:*][@<category>][#<nth>]`);
    const kind = (ALIASES[m[1]!] ?? m[1]) as FaultKind;
    if (!FAULT_KINDS.includes(kind))
      throw new FaultSpecError(`unknown fault kind "${m[1]}" (known: ${FAULT_KINDS.join(', ')}, cme527)`);
    const category = (m[3] ?? DEFAULT_CATEGORY[kind]) as Category;
    if (!CATEGORIES.includes(category))
      throw new FaultSpecError(`unknown command category "${m[3]}" (known: ${CATEGORIES.join(', ')})`);
    const remaining = m[2] === '*' ? Infinity : Number(m[2] ?? 1);
    const nth = Number(m[4] ?? 1);
    if (remaining < 1 || nth < 1) throw new FaultSpecError(`bad fault "${part}": count and nth start at 1`);
    return { kind, category, remaining, skip: nth - 1 };
  });
}

/** The live fault plan of one simulated device. */
export class FaultPlan {
  readonly fired: { kind: FaultKind; category: Category }[] = [];
  constructor(private readonly rules: FaultRule[]) {}

  /** True if a `kind` fault fires for this command (and uses it up). */
  take(kind: FaultKind, category: Category): boolean {
    const rule = this.rules.find((r) => r.kind === kind && r.category === category && r.remaining > 0);
    if (!rule) return false;
    if (rule.skip > 0) {
      rule.skip--;
      return false;
    }
    rule.remaining--;
    this.fired.push({ kind, category });
    return true;
  }
}

/**
 * Flips the low bit of one byte near the middle, never creating or destroying a quote or line
 * end (a command's or an answer's).
 */
export function corruptMiddle(unit: Buffer): Buffer {
  const out = Buffer.from(unit);
  const avoid = new Set([0x22, 0x23, 0x0a, 0x0b, 0x0c, 0x0d]);
  for (let i = Math.floor(out.length / 2); i < out.length; i++) {
    if (!avoid.has(out[i]!) && !avoid.has(out[i]! ^ 1)) {
      out[i] = out[i]! ^ 1;
      return out;
    }
  }
  return out;
}

/** Drops three bytes from the middle of an answer. */
export function dropMiddle(answer: Buffer): Buffer {
  if (answer.length < 4) return Buffer.alloc(0);
  const at = Math.floor(answer.length / 2);
  return Buffer.concat([answer.subarray(0, at), answer.subarray(at + 3)]);
}
