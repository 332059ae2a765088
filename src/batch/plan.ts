/**
 * Plan, then apply: a batch becomes a versioned, serialisable plan before any side effect.
 * The planner is pure (rows + profile + clock + id in, plan out); workers only carry out plan
 * items, and a plan read back from Redis or a file is validated against the same schema.
 *
 * Version 2 keeps the plan in two parts, so that a lot of any size is planned in bounded
 * memory: the header (everything but the devices, with their count) and the devices in pages
 * of PLAN_PAGE, in plan order. `submit` writes pages as it reads the CSV; readers put the
 * whole plan together (`assemblePlan`). A version-1 plan (one document) is still read.
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';
import type { ResolvedProfile } from '../config/index.js';
import {
  CaSettingsSchema,
  DRIVERS,
  KEY_DELIVERIES,
  KEY_TYPES,
  REGISTRATION_MODES,
  STRATEGY_NAMES,
  strategyNameOf,
} from '../config/index.js';
import type { IntakeRow, Problem } from './rules.js';

export const PLAN_VERSION = 2;
/** Devices per stored page of a plan. */
export const PLAN_PAGE = 1000;

const PlanDeviceSchema = z.object({
  serial: z.string().min(1),
  thingName: z.string().min(1),
  line: z.number().int().positive(),
  attributes: z.record(z.string(), z.string()),
  parameters: z.record(z.string(), z.string()),
});

const header = {
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
    /** The strategy, resolved at submit time (plans made before strategies existed imply it). */
    strategy: z.enum(STRATEGY_NAMES).optional(),
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
    /** The factory CA that signs the lot's certificates (jitp, jitr). */
    ca: CaSettingsSchema.optional(),
    driver: z.enum(DRIVERS),
    driverSettings: z.record(z.string(), z.union([z.string(), z.number(), z.boolean()])),
  }),
  /**
   * Rows left out by --skip-invalid, with their problems; `serial` is the row's own serial as
   * written, null when the row has none that can be read.
   */
  rejected: z.array(
    z.object({
      line: z.number().int().positive(),
      serial: z.string().nullable(),
      codes: z.array(z.string()),
    }),
  ),
};

/** The stored header of a version-2 plan: everything but the devices. */
export const PlanHeaderSchema = z.object({
  version: z.literal(PLAN_VERSION),
  ...header,
  deviceCount: z.number().int().nonnegative(),
});
/** A whole plan as one document (a version-1 plan, or a plan put together from its pages). */
export const BatchPlanSchema = PlanHeaderSchema.extend({ devices: z.array(PlanDeviceSchema) });
const PlanV1Schema = z.object({ version: z.literal(1), ...header, devices: z.array(PlanDeviceSchema) });
const PageSchema = z.array(PlanDeviceSchema);

export type PlanDevice = z.infer<typeof PlanDeviceSchema>;
export type PlanHeader = z.infer<typeof PlanHeaderSchema>;
export type BatchPlan = z.infer<typeof BatchPlanSchema>;
export type RejectedRow = PlanHeader['rejected'][number];

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
  /** Each rejected row's own serial by line (intake's onReject); null when unreadable. */
  rejectedSerials?: ReadonlyMap<number, string | null>;
}

export type HeaderInput = Omit<PlanInput, 'rows'> & { deviceCount: number };

/** The whole plan in one document (tests, seeders, small lots). */
export function buildPlan(input: PlanInput): BatchPlan {
  return {
    ...buildPlanHeader({ ...input, deviceCount: input.rows.length }),
    devices: input.rows.map(planDevice),
  };
}

/** One plan item from one valid CSV row. */
export function planDevice(r: IntakeRow): PlanDevice {
  return {
    serial: r.serial,
    thingName: r.thingName,
    line: r.line,
    attributes: r.attributes,
    parameters: r.parameters,
  };
}

/** Rejected rows grouped by line, each with its own serial (never a problem's value). */
export function rejectedRows(
  problems: readonly Problem[],
  serials: ReadonlyMap<number, string | null> = new Map(),
): RejectedRow[] {
  const rejected = new Map<number, RejectedRow>();
  for (const p of problems) {
    if (p.line <= 1) continue;
    const entry = rejected.get(p.line) ?? { line: p.line, serial: serials.get(p.line) ?? null, codes: [] };
    entry.codes.push(p.code);
    rejected.set(p.line, entry);
  }
  return [...rejected.values()].sort((a, b) => a.line - b.line);
}

/** The plan's header: what is known once the whole file has been read, without the devices. */
export function buildPlanHeader(input: HeaderInput): PlanHeader {
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
      strategy: strategyNameOf(profile),
      kekLabel: profile.kekLabel,
      registration: { ...profile.registration },
      templateSha256: sha256(input.templateBody),
      templateBody: input.templateBody,
      policyName: profile.policyName,
      ...(input.policyDocument === undefined ? {} : { policyDocument: input.policyDocument }),
      ...(profile.thingType === undefined ? {} : { thingType: profile.thingType }),
      thingGroups: [...profile.thingGroups],
      csrSubject: { ...profile.csrSubject },
      ...(profile.ca === undefined ? {} : { ca: structuredClone(profile.ca) }),
      driver: profile.driver,
      driverSettings: { ...profile.driverSettings },
    },
    deviceCount: input.deviceCount,
    rejected: rejectedRows(input.rejected ?? [], input.rejectedSerials),
  };
}

/**
 * Parses a stored plan document: a version-2 header (its devices are in pages), or a whole
 * version-1 plan, read as version 2. Versions this provline does not know are refused.
 */
export function parseStoredPlan(json: string): PlanHeader | BatchPlan {
  const raw = JSON.parse(json) as { version?: unknown };
  return raw.version === 1 ? parsePlan(json) : PlanHeaderSchema.parse(raw);
}

/** Parses a whole plan in one document (version 1 read as version 2). */
export function parsePlan(json: string): BatchPlan {
  const raw = JSON.parse(json) as { version?: unknown };
  if (raw.version !== 1) return BatchPlanSchema.parse(raw);
  const v1 = PlanV1Schema.parse(raw);
  return { ...v1, version: PLAN_VERSION, deviceCount: v1.devices.length };
}

/** Parses one stored page of plan devices. */
export function parsePlanPage(json: string): PlanDevice[] {
  return PageSchema.parse(JSON.parse(json));
}

/** A header and its pages put together (the pages in order). */
export function assemblePlan(h: PlanHeader, pages: readonly PlanDevice[][]): BatchPlan {
  const devices = pages.flat();
  if (devices.length !== h.deviceCount)
    throw new Error(`plan ${h.batchId} has ${devices.length} devices in its pages, not ${h.deviceCount}`);
  return { ...h, devices };
}

export function sha256(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}
