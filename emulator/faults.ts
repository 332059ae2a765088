/**
 * Fault injection and pacing, deterministic with a seed. Settable at start (`--faults
 * <json|file>`, `--seed`, `--lines-per-second`) and at run time through the admin endpoint
 * (`PUT /_emulator/faults`, see docs/emulator.md) or `provline emulator faults`.
 *
 * Determinism: each operation has its own pseudo-random stream seeded from (seed, operation),
 * so whether the n-th call of CreateThing is throttled depends only on n, not on how other
 * operations interleave. Replacing the faults resets the streams.
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';

const Fraction = z.number().min(0).max(1);

export const FaultsSchema = z
  .object({
    seed: z.number().int().default(1),
    /** Operation name (or "*") → fraction of calls answered with ThrottlingException 400. */
    throttle: z.record(z.string(), Fraction).default({}),
    /** Operation name (or "*") → added latency in ms. */
    latencyMs: z.record(z.string(), z.number().int().min(0).max(60_000)).default({}),
    /** Bulk lines whose raw JSON text matches `pattern` fail with `error` (and `message`). */
    failLines: z
      .array(
        z
          .object({
            pattern: z.string().min(1),
            error: z
              .string()
              .regex(/^[A-Za-z]+$/)
              .default('ResourceRegistrationFailureException'),
            message: z.string().optional(),
          })
          .strict(),
      )
      .default([]),
    /** Fail the next bulk task(s) outright (status Failed, with this message). */
    failTask: z
      .object({
        message: z.string().default('Injected task failure'),
        afterLines: z.number().int().min(0).default(0),
      })
      .strict()
      .nullable()
      .default(null),
    /** Pace bulk lines per second (null = as fast as possible). */
    linesPerSecond: z.number().positive().nullable().default(null),
  })
  .strict();

export type Faults = z.infer<typeof FaultsSchema>;
export type FaultsInput = z.input<typeof FaultsSchema>;

/** mulberry32: small, fast, good enough for fault decisions. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function seedFor(seed: number, name: string): number {
  return createHash('sha256').update(`${seed}:${name}`).digest().readUInt32BE(0);
}

export class FaultPlan {
  private streams = new Map<string, () => number>();
  private compiled: Array<{ re: RegExp; error: string; message: string | undefined }> = [];
  private current: Faults;

  constructor(input: FaultsInput = {}) {
    this.current = FaultsSchema.parse(input);
    this.compile();
  }

  get faults(): Faults {
    return this.current;
  }

  /** Replaces the faults (a merge of `patch` over the current ones) and resets the streams. */
  update(patch: FaultsInput, replace = false): Faults {
    this.current = FaultsSchema.parse(replace ? patch : { ...this.current, ...patch });
    this.streams = new Map();
    this.compile();
    return this.current;
  }

  private compile(): void {
    this.compiled = this.current.failLines.map((f) => ({
      re: new RegExp(f.pattern),
      error: f.error,
      message: f.message,
    }));
  }

  private draw(key: string): number {
    let s = this.streams.get(key);
    if (!s) this.streams.set(key, (s = rng(seedFor(this.current.seed, key))));
    return s();
  }

  /** True if this call of `operation` is to be throttled. */
  throttled(operation: string): boolean {
    const f = this.current.throttle[operation] ?? this.current.throttle['*'];
    if (!f) return false;
    return this.draw(operation) < f;
  }

  latency(operation: string): number {
    return this.current.latencyMs[operation] ?? this.current.latencyMs['*'] ?? 0;
  }

  /** The injected failure for a bulk line, if its text matches a pattern. */
  lineFailure(line: string): { error: string; message: string | undefined } | undefined {
    for (const f of this.compiled) if (f.re.test(line)) return { error: f.error, message: f.message };
    return undefined;
  }
}
