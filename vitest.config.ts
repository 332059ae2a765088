import { defineConfig } from 'vitest/config';

// Integration tests start real services (redis-server, SoftHSM, the AWS IoT stand-in, socat),
// so they run in forked processes with generous timeouts; files run one or two at a time
// because the machine has two cores.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 60_000,
    hookTimeout: 120_000,
    globalSetup: ['test/global-setup.ts'],
    reporters: ['default'],
    // The SDK's notice that releases after January 2027 need Node 22 (we pin the SDK).
    env: { AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
  },
});
