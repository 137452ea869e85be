import { expect, test } from 'vitest';
import { runSoak } from '../../bench/lib/soak.ts';
import { soakVerdict } from '../../bench/lib/soak-report.ts';

// The 30-second cut of `npm run soak` (bench/soak.ts: 10 minutes, an agent restart every 2): mixed load on
// a user-server process through real ANP, cluster-a's agent restarted once halfway.
test('30 s of short requests, watches, logs -f and exec with an agent restart: no hung client, no failure but the restart\'s, nothing left open', async () => {
  const r = await runSoak({ seconds: 30, agentRestartEverySeconds: 15, sampleEverySeconds: 5, load: { shortLoops: 4, watches: 30, logStreams: 6, execLoops: 2 } });
  expect(r.agentRestarts).toBe(1);
  expect(r.hung).toEqual({});
  expect(r.failures.otherwise).toEqual({});
  // The restart cut the streams on cluster-a and they were opened again: every loop made progress.
  expect(r.ops.watchOpens).toBeGreaterThan(36);
  expect(r.ops.short).toBeGreaterThan(1000);
  expect(r.ops.execRoundTrips).toBeGreaterThan(500);
  const v = soakVerdict(r);
  // Once every client closed, only pooled idle tunnels remain (at most one per short loop and cluster
  // tunnel pool), each holding one descriptor in http-connect mode and none of its own in gRPC mode.
  expect(v.tunnelsAtEnd).toBeLessThanOrEqual(12);
  expect(v.fdsAtEnd).toBeLessThanOrEqual(v.fdsAtStart + 14);
}, 120_000);
