/**
 * The Lambda deployment package of the JITR activator (../lambda-package.ts): the compiled
 * handler (lambda.js, as `index.js`, so the handler is `index.handler`) and the modules it
 * imports, and optionally the factory CA certificates as `ca-certificates.pem` (then
 * PROVLINE_JITR_CA_CERTS=ca-certificates.pem). The handler may import only its own folder,
 * node builtins and @aws-sdk/client-iot (which the Lambda Node.js runtime provides).
 */
import { ProvlineError } from '../../core/index.js';
import { lambdaZip, type LambdaSpec } from '../lambda-package.js';

export { importsOf } from '../lambda-package.js';

/** Bare imports the Lambda runtime provides. */
export const RUNTIME_MODULES = ['@aws-sdk/client-iot'];
export const CA_FILE = 'ca-certificates.pem';
export const HANDLER = 'index.handler';

function packageError(message: string, details: Record<string, unknown>): ProvlineError {
  return new ProvlineError('JITR_PACKAGE_INVALID', message, {
    kind: 'failed',
    hint: 'The Lambda handler may import only its own folder, node builtins and @aws-sdk/client-iot; rebuild with `npm run build` first.',
    details,
  });
}

const spec = (jitrDir: string): LambdaSpec => ({
  dir: jitrDir,
  entry: 'lambda.js',
  runtimeModules: RUNTIME_MODULES,
  fail: packageError,
});

/** The zip: package.json, the handler's files, and the CA certificates when given. */
export function lambdaPackage(jitrDir: string, caCertificatesPem?: string): { zip: Buffer; files: string[] } {
  return lambdaZip(
    spec(jitrDir),
    caCertificatesPem ? [{ name: CA_FILE, data: Buffer.from(caCertificatesPem) }] : [],
  );
}
