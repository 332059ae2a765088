import { InvalidArgumentError } from 'commander';

/** A commander parser for integer options with a lower bound. */
export function intOption(name: string, min: number, max = Number.MAX_SAFE_INTEGER): (v: string) => number {
  return (v: string) => {
    const n = Number(v);
    if (!/^-?\d+$/.test(v) || n < min || n > max) {
      throw new InvalidArgumentError(
        `${name} takes a whole number from ${min}${max < Number.MAX_SAFE_INTEGER ? ` to ${max}` : ''}, got "${v}"`,
      );
    }
    return n;
  };
}
