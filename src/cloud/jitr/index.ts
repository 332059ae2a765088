/**
 * The JITR activator (issue 13 item 5): the pure decision (decide.ts), its AWS calls
 * (activate.ts), the Lambda entry (lambda.ts, packaged by package.ts) and the IoT rule that
 * feeds it (rule.ts). The local process is workers/jitr-activator.ts.
 */
export {
  ActivatorConfigError,
  certificateIdOf,
  compileConfig,
  decide,
  parseRegisteredEvent,
  pemCertificates,
  type ActivatorConfig,
  type ActivatorSettings,
  type CertificateView,
  type CompiledConfig,
  type Decision,
  type RefusalCode,
  type RegisteredEvent,
} from './decide.js';
export {
  ActivationStepError,
  decisionLog,
  processEvent,
  type ActivationResult,
  type DecisionLog,
} from './activate.js';
export { CA_VARIABLE, CONFIG_VARIABLE } from './lambda.js';
export { CA_FILE, HANDLER, RUNTIME_MODULES, importsOf, lambdaPackage } from './package.js';
export {
  activatorRuleName,
  activatorRulePayload,
  ensureActivatorRule,
  registeredTopic,
  type RuleOutcome,
} from './rule.js';
