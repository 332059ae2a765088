/**
 * The Lambda deployment package of provline's pre-provisioning hook (../lambda-package.ts):
 * handler.js as `index.js` (handler `index.handler`) with allow-list.js and decide.js. The
 * hook may import only its own folder, node builtins, @aws-sdk/client-s3 and
 * @aws-sdk/client-iot, which the Lambda Node.js runtime provides.
 */
import { ProvlineError } from '../../core/index.js';
import { lambdaZip } from '../lambda-package.js';

export const HOOK_RUNTIME_MODULES = ['@aws-sdk/client-s3', '@aws-sdk/client-iot'];
export const HOOK_HANDLER = 'index.handler';

/** The zip of the compiled hook in `hookDir` (dist/src/cloud/hook). */
export function hookPackage(hookDir: string): { zip: Buffer; files: string[] } {
  return lambdaZip({
    dir: hookDir,
    entry: 'handler.js',
    runtimeModules: HOOK_RUNTIME_MODULES,
    fail: (message, details) =>
      new ProvlineError('CLAIM_HOOK_PACKAGE_INVALID', message, {
        kind: 'failed',
        hint: 'The hook may import only its own folder, node builtins, @aws-sdk/client-s3 and @aws-sdk/client-iot; rebuild with `npm run build` first.',
        details,
      }),
  });
}
