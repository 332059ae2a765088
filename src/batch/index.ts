/**
 * The src/batch room's public face (CSV intake and its rules, plans, the provisioning strategies, the pure journal model).
 * Other rooms import from here only; files inside the room import each other directly.
 */
export { bundleFor, mqttAddress } from './bundle.js';
export type { DeviceBundle } from './bundle.js';
export { validateCsvFile } from './intake.js';
export type { IntakeResult } from './intake.js';
export { VISITS_KEPT, VISIT_LINES_MAX, capLines } from './journal.js';
export type {
  BatchView,
  ClaimView,
  DeviceJournal,
  DeviceRecord,
  ExchangeLine,
  RegisterCsr,
  TransitionOutcome,
  TransitionRequest,
  VisitLog,
} from './journal.js';
export { compilePattern } from './pattern.js';
export {
  PLAN_PAGE,
  assemblePlan,
  buildPlanHeader,
  parsePlanPage,
  parseStoredPlan,
  planDevice,
} from './plan.js';
export type { BatchPlan, PlanDevice, PlanHeader } from './plan.js';
export { reportCsvHeader, reportCsvRow } from './report.js';
export type { ReportRow } from './report.js';
export { ATTRIBUTE_VALUE_RE } from './rules.js';
export type { Problem } from './rules.js';
export { ALLOWED_FROM, STATES } from './states.js';
export type { DeviceState } from './states.js';
