// Compares two V8 heap snapshots by constructor: objects and self bytes added between them.
//   node --max-old-space-size=4096 bench/memory-heap-diff.ts before.heapsnapshot after.heapsnapshot [per=2000] [top=40]
// `per` divides the differences (e.g. by the number of watches opened between the snapshots).
import { readFileSync } from 'node:fs';

interface Snapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[], ...unknown[]] } };
  nodes: number[];
  strings: string[];
}

function tally(file: string): Map<string, { count: number; bytes: number }> {
  const s = JSON.parse(readFileSync(file, 'utf8')) as Snapshot;
  const fields = s.snapshot.meta.node_fields;
  const types = s.snapshot.meta.node_types[0];
  const n = fields.length;
  const iType = fields.indexOf('type');
  const iName = fields.indexOf('name');
  const iSize = fields.indexOf('self_size');
  const out = new Map<string, { count: number; bytes: number }>();
  for (let i = 0; i < s.nodes.length; i += n) {
    const type = types[s.nodes[i + iType]!]!;
    let name = s.strings[s.nodes[i + iName]!]!;
    if (type === 'string' || type === 'concatenated string' || type === 'sliced string') name = '';
    else if (type === 'closure') name = `closure ${name}`;
    else if (type === 'code' || type === 'hidden') name = name.slice(0, 40);
    else if (type === 'array') name = name.slice(0, 40);
    const key = `${type}:${name.slice(0, 80)}`;
    const e = out.get(key) ?? { count: 0, bytes: 0 };
    e.count++;
    e.bytes += s.nodes[i + iSize]!;
    out.set(key, e);
  }
  return out;
}

const [a, b, perArg, topArg] = process.argv.slice(2);
const per = Number(perArg ?? 1);
const top = Number(topArg ?? 40);
const before = tally(a!);
const after = tally(b!);
const rows: { key: string; count: number; bytes: number }[] = [];
let total = 0;
for (const [key, v] of after) {
  const w = before.get(key) ?? { count: 0, bytes: 0 };
  rows.push({ key, count: (v.count - w.count) / per, bytes: (v.bytes - w.bytes) / per });
  total += v.bytes - w.bytes;
}
for (const [key, w] of before) if (!after.has(key)) { rows.push({ key, count: -w.count / per, bytes: -w.bytes / per }); total -= w.bytes; }
rows.sort((x, y) => y.bytes - x.bytes);
console.log(`total self bytes added: ${(total / per).toFixed(0)} per unit (${(total / 2 ** 20).toFixed(1)} MiB)`);
for (const r of rows.slice(0, top)) console.log(`${r.bytes.toFixed(0).padStart(8)} B ${r.count.toFixed(2).padStart(8)} objs  ${r.key}`);
