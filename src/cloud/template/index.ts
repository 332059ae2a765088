/** The provisioning-template evaluator: parse once, evaluate per device, lint locally. */
export {
  TEMPLATE_BODY_MAX,
  analyseTemplate,
  evaluateTemplate,
  lintTemplate,
  parseTemplate,
  policyNameForDocument,
} from './evaluate.js';
export {
  JITP_CERTIFICATE_ID,
  JITP_SUBJECT_PARAMETERS,
  lintJitpTemplate,
  type JitpProblem,
} from './jitp-lint.js';
export { deviceSubjectAttributes, lintProfileTemplate, type ProfileTemplateProblem } from './profile-lint.js';
export * from './types.js';
