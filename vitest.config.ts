import { defineConfig } from 'vitest/config';

// Integration tests start real services (redis-server, SoftHSM, the AWS IoT stand-in, socat),
// so they run in forked processes; files run one or two at a time because the machine has two
// cores. Time budgets belong to steps (each CLI call, each wait for an event has its own, see
// test/helpers/cli.ts), so a slow step fails with its own message; the test-level timeout only
// stops a hang, and is long enough never to cut a test whose steps are each within budget.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 180_000,
    hookTimeout: 180_000,
    globalSetup: ['test/global-setup.ts'],
    reporters: ['default'],
    // The SDK's notice that releases after January 2027 need Node 22 (we pin the SDK).
    env: { AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
  },
});
