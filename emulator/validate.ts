/**
 * AWS IoT's member constraints (aws-iot.md §6.1, MODEL shapes) and the front-door message
 * format AWS uses for them: "1 validation error detected: Value 'x' at 'thingName' failed to
 * satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9:_-]+".
 * Pure functions; they throw IotError(InvalidRequestException).
 */
import { IotError, invalid } from './errors.js';

export interface Rule {
  min?: number;
  max?: number;
  pattern?: RegExp;
  /** The pattern as AWS prints it. */
  patternText?: string;
  values?: readonly string[];
}

export const RULES = {
  thingName: { min: 1, max: 128, pattern: /^[a-zA-Z0-9:_-]+$/, patternText: '[a-zA-Z0-9:_-]+' },
  attributeName: { min: 1, max: 128, pattern: /^[a-zA-Z0-9_.,@/:#-]+$/, patternText: '[a-zA-Z0-9_.,@/:#-]+' },
  attributeValue: {
    max: 800,
    pattern: /^[a-zA-Z0-9_.,@/:#=[\]-]*$/,
    patternText: '[a-zA-Z0-9_.,@/:#=\\[\\]-]*',
  },
  description: { max: 2028, pattern: /^(?:[^\p{C}\p{Z}]|\x20)*$/u, patternText: '[\\p{Graph}\\x20]*' },
  policyName: { min: 1, max: 128, pattern: /^[\w+=,.@-]+$/, patternText: '[\\w+=,.@-]+' },
  templateName: { min: 1, max: 36, pattern: /^[0-9A-Za-z_-]+$/, patternText: '^[0-9A-Za-z_-]+$' },
  templateDescription: { max: 500, pattern: /^[^\p{C}]*$/u, patternText: '[^\\p{C}]*' },
  templateBody: { max: 10240 },
  roleArn: { min: 20, max: 2048 },
  certificateId: { min: 64, max: 64, pattern: /^(0x)?[a-fA-F0-9]+$/, patternText: '(0x)?[a-fA-F0-9]+' },
  csr: { min: 1, max: 4096 },
  certificatePem: { min: 1, max: 65536 },
  bucket: { min: 3, max: 256, pattern: /^[a-zA-Z0-9._-]+$/, patternText: '[a-zA-Z0-9._-]+' },
  key: { min: 1, max: 1024, pattern: /^[a-zA-Z0-9!_.*'()/-]+$/, patternText: "[a-zA-Z0-9!_.*'()-\\/]+" },
  taskId: { max: 40 },
  maxResults: { min: 1, max: 250 },
  parameterKey: { max: 2048 },
  parameterValue: { max: 4096 },
} satisfies Record<string, Rule>;

export const MAX_ATTRIBUTES_UNTYPED = 3;
export const MAX_ATTRIBUTES_TYPED = 50;
export const MAX_GROUP_ATTRIBUTES = 50;
export const MAX_GROUPS_PER_THING = 10;
export const MAX_POLICIES_PER_TARGET = 10;
export const MAX_POLICY_CHARS = 2048;
export const MAX_GROUP_DEPTH = 7;

/** Every constraint `value` breaks, in AWS's wording. */
export function violations(value: string, rule: Rule): string[] {
  const out: string[] = [];
  if (rule.min !== undefined && value.length < rule.min)
    out.push(`Member must have length greater than or equal to ${rule.min}`);
  if (rule.max !== undefined && value.length > rule.max)
    out.push(`Member must have length less than or equal to ${rule.max}`);
  if (rule.pattern && !rule.pattern.test(value))
    out.push(`Member must satisfy regular expression pattern: ${rule.patternText}`);
  if (rule.values && !rule.values.includes(value))
    out.push(`Member must satisfy enum value set: [${rule.values.join(', ')}]`);
  return out;
}

/** Collects validation errors across several members, then throws them as one. */
export class Validation {
  private readonly errors: string[] = [];

  check(field: string, value: string | undefined, rule: Rule): this {
    if (value === undefined) return this;
    const v = violations(value, rule);
    if (v.length)
      this.errors.push(
        `Value '${value.length > 256 ? `${value.slice(0, 256)}…` : value}' at '${field}' failed to satisfy constraint: ${v.join('; ')}`,
      );
    return this;
  }

  required(field: string, value: unknown): this {
    if (value === undefined || value === null)
      this.errors.push(`Value null at '${field}' failed to satisfy constraint: Member must not be null`);
    return this;
  }

  done(): void {
    if (!this.errors.length) return;
    throw invalid(
      `${this.errors.length} validation error${this.errors.length === 1 ? '' : 's'} detected: ${this.errors.join('; ')}`,
    );
  }
}

export function checkOne(field: string, value: string | undefined, rule: Rule): void {
  new Validation().check(field, value, rule).done();
}

/** Attribute map checks (names, values, count). `typed` = the thing has a thing type. */
export function checkAttributes(field: string, attributes: Record<string, string>, max: number): void {
  const v = new Validation();
  for (const [k, value] of Object.entries(attributes)) {
    v.check(`${field}.${k}`, k, RULES.attributeName);
    if (typeof value !== 'string') throw invalid(`Value at '${field}.${k}' must be a string`);
    v.check(`${field}.${k}`, value, RULES.attributeValue);
  }
  v.done();
  if (Object.keys(attributes).length > max) {
    throw invalid(
      `The number of attributes (${Object.keys(attributes).length}) exceeds the limit of ${max}${max === MAX_ATTRIBUTES_UNTYPED ? ' for a thing without a thing type' : ''}.`,
    );
  }
}

/** Policy documents: JSON, an object with Statement, ≤ 2048 non-whitespace characters. */
export function checkPolicyDocument(doc: string): void {
  const size = doc.replace(/\s+/g, '').length;
  if (size > MAX_POLICY_CHARS)
    throw new IotError(
      'MalformedPolicyException',
      `Policy document is too large: ${size} characters excluding whitespace; the maximum is ${MAX_POLICY_CHARS}.`,
    );
  let parsed: unknown;
  try {
    parsed = JSON.parse(doc);
  } catch {
    throw new IotError('MalformedPolicyException', 'Policy document is not valid JSON.');
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed) || !('Statement' in parsed)) {
    throw new IotError('MalformedPolicyException', 'Policy document must be a JSON object with a Statement.');
  }
}
