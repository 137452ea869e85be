import { defineConfig } from 'vitest/config';

/**
 * Integration files that do not depend on the project's frontend mode, run once: the Dockerfile replay,
 * the demo (`scripts/demo.ts` starts its own chain, in the default mode), the benchmark smoke run (its
 * own topology: an http-connect proxy-server for the limit client and this user-server), the ANP
 * version matrix (it starts every version in both modes itself), the front's client limits and h2spec (no
 * chain: a dialer of the test's own), and bad input (refused at the front before any tunnel; its chain, in
 * the default mode, only serves the well-behaved client running beside each case), and the 30-second soak
 * (a user-server process in the default mode; `npm run soak -- --mode http-connect` covers the other).
 */
const ONCE = [
  'test/integration/dockerfile.test.ts',
  'test/integration/demo.test.ts',
  'test/integration/bench-smoke.test.ts',
  'test/integration/anp-versions.test.ts',
  'test/integration/front-limits.test.ts',
  'test/integration/h2spec.test.ts',
  'test/integration/bad-input.test.ts',
  'test/integration/soak.test.ts',
];
/**
 * Every other integration and e2e file starts a chain (or a CLI whose proxy mode follows ANP_MODE) and runs
 * once per mode. Files named grpc-* or http-connect-* cover one mode only and run in that mode's project
 * alone (grpc-mode.test.ts: dials never answered, replicas, the Go user-server's command line).
 */
const PER_MODE = ['test/integration/**/*.test.ts', 'test/e2e/**/*.test.ts'];
const ONLY = {
  grpc: ['test/integration/**/grpc-*.test.ts', 'test/e2e/**/grpc-*.test.ts'],
  'http-connect': ['test/integration/**/http-connect-*.test.ts', 'test/e2e/**/http-connect-*.test.ts'],
};

/** One project per ANP frontend mode: the real proxy-server runs `--mode=<mode>`, the user-server `--proxy-mode=<mode>`. */
const modeProject = (mode: 'grpc' | 'http-connect') => ({
  extends: true as const,
  test: {
    name: mode,
    include: PER_MODE,
    exclude: [...ONCE, ...ONLY[mode === 'grpc' ? 'http-connect' : 'grpc']],
    env: { ANP_MODE: mode },
  },
});

export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
    // The machines have 2 cores; each integration file runs its own ANP chain. The limit is shared by all
    // projects (they run in one pool), so `npm test` never runs more than two files at once.
    maxWorkers: 2,
    reporters: ['default'],
    projects: [
      { extends: true, test: { name: 'unit', include: ['test/unit/**/*.test.ts', 'test/deploy/**/*.test.ts'] } },
      { extends: true, test: { name: 'once', include: ONCE } },
      modeProject('grpc'),
      modeProject('http-connect'),
    ],
  },
});
