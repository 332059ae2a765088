/** The provisioning-template evaluator: parse once, evaluate per device, lint locally. */
export {
  TEMPLATE_BODY_MAX,
  analyseTemplate,
  evaluateTemplate,
  lintTemplate,
  parseTemplate,
  policyNameForDocument,
} from './evaluate.js';
export * from './types.js';
