import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { runSoak, type SoakResult } from './lib/soak.ts';
import { soakMarkdown, soakSvg } from './lib/soak-report.ts';

// npm run soak [-- --seconds 600 --restart-every 120 --sample-every 10 --mode grpc]
const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '600' },
    'restart-every': { type: 'string', default: '120' },
    'sample-every': { type: 'string', default: '10' },
    mode: { type: 'string' },
  },
});
const mode = values.mode === undefined ? undefined : (values.mode as 'grpc' | 'http-connect');
const load = os.loadavg().map((l) => l.toFixed(2)).join(' / ');
const started = new Date();
console.log(`soak: ${values.seconds} s, agent restart every ${values['restart-every']} s, load average ${load}`);
const result: SoakResult = await runSoak({
  seconds: Number(values.seconds),
  agentRestartEverySeconds: Number(values['restart-every']),
  sampleEverySeconds: Number(values['sample-every']),
  ...(mode === undefined ? {} : { mode }),
  onSample: (s) => console.log(JSON.stringify(s)),
});
const out = path.resolve(import.meta.dirname, 'results');
mkdirSync(out, { recursive: true });
const context = { started: started.toISOString(), loadAtStart: load, node: process.version, cores: os.cpus().length, seconds: Number(values.seconds) };
writeFileSync(path.join(out, 'soak.json'), JSON.stringify({ context, ...result }, null, 2) + '\n');
writeFileSync(path.join(out, 'soak.md'), soakMarkdown(result, context));
writeFileSync(path.join(out, 'soak.svg'), soakSvg(result));
console.log(soakMarkdown(result, context));
