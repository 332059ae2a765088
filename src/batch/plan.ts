/**
 * Plan, then apply: a batch becomes a versioned, serialisable plan before any side effect.
 * The planner is pure (rows + profile + clock + id in, plan out); workers only carry out plan
 * items, and a plan read back from Redis or a file is validated against the same schema.
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';
import type { ResolvedProfile } from '../config/load.js';
import { DRIVERS, KEY_DELIVERIES, KEY_TYPES, REGISTRATION_MODES } from '../config/schema.js';
import type { IntakeRow, Problem } from './rules.js';

export const PLAN_VERSION = 1;

const PlanDevice = z.object({
  serial: z.string().min(1),
  thingName: z.string().min(1),
  line: z.number().int().positive(),
  attributes: z.record(z.string(), z.string()),
  parameters: z.record(z.string(), z.string()),
});

export const BatchPlanSchema = z.object({
  version: z.literal(PLAN_VERSION),
  batchId: z.string().regex(/^[a-z0-9-]{4,64}$/),
  createdAt: z.string(),
  source: z.object({
    file: z.string(),
    sha256: z.string().regex(/^[0-9a-f]{64}$/),
    rows: z.number().int().nonnegative(),
  }),
  profile: z.object({
    name: z.string(),
    keyType: z.enum(KEY_TYPES),
    keyDelivery: z.enum(KEY_DELIVERIES),
    kekLabel: z.string(),
    registration: z.object({
      mode: z.enum(REGISTRATION_MODES),
      chunkSize: z.number().int().positive(),
      tps: z.number().positive(),
    }),
    /** SHA-256 of the template body at plan time: a later change of the file is detected. */
    templateSha256: z.string().regex(/^[0-9a-f]{64}$/),
    /**
     * The profile as it was at submit time, so workers and stations on other hosts carry out
     * exactly this plan without reading profile files of their own.
     */
    templateBody: z.string(),
    policyName: z.string(),
    policyDocument: z.string().optional(),
    thingType: z.string().optional(),
    thingGroups: z.array(z.string()),
    csrSubject: z.record(z.string(), z.string()),
    driver: z.enum(DRIVERS),
    driverSettings: z.record(z.string(), z.union([z.string(), z.number(), z.boolean()])),
  }),
  devices: z.array(PlanDevice),
  /** Rows left out by --skip-invalid, with their problems. */
  rejected: z.array(
    z.object({
      line: z.number().int().positive(),
      serial: z.string().nullable(),
      codes: z.array(z.string()),
    }),
  ),
});

export type BatchPlan = z.infer<typeof BatchPlanSchema>;

export interface PlanInput {
  batchId: string;
  now: Date;
  profile: ResolvedProfile;
  templateBody: string;
  /** The device policy document (JSON text), when the profile names one. */
  policyDocument?: string;
  source: { file: string; sha256: string; rows: number };
  rows: IntakeRow[];
  rejected?: Problem[];
}

export function buildPlan(input: PlanInput): BatchPlan {
  const rejected = new Map<number, { line: number; serial: string | null; codes: string[] }>();
  for (const p of input.rejected ?? []) {
    const entry = rejected.get(p.line) ?? {
      line: p.line,
      serial: p.column === 'serial' ? p.value : null,
      codes: [],
    };
    entry.codes.push(p.code);
    rejected.set(p.line, entry);
  }
  const { profile } = input;
  return {
    version: PLAN_VERSION,
    batchId: input.batchId,
    createdAt: input.now.toISOString(),
    source: input.source,
    profile: {
      name: profile.name,
      keyType: profile.keyType,
      keyDelivery: profile.keyDelivery,
      kekLabel: profile.kekLabel,
      registration: { ...profile.registration },
      templateSha256: sha256(input.templateBody),
      templateBody: input.templateBody,
      policyName: profile.policyName,
      ...(input.policyDocument === undefined ? {} : { policyDocument: input.policyDocument }),
      ...(profile.thingType === undefined ? {} : { thingType: profile.thingType }),
      thingGroups: [...profile.thingGroups],
      csrSubject: { ...profile.csrSubject },
      driver: profile.driver,
      driverSettings: { ...profile.driverSettings },
    },
    devices: input.rows.map((r) => ({
      serial: r.serial,
      thingName: r.thingName,
      line: r.line,
      attributes: r.attributes,
      parameters: r.parameters,
    })),
    rejected: [...rejected.values()].sort((a, b) => a.line - b.line),
  };
}

/** Parses a stored plan, refusing versions this provline does not know. */
export function parsePlan(json: string): BatchPlan {
  return BatchPlanSchema.parse(JSON.parse(json));
}

export function sha256(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}
