import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
    // The machines have 2 cores; each integration file runs its own ANP chain.
    maxWorkers: 2,
    reporters: ['default'],
  },
});
