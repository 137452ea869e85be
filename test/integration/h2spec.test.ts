import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http2 from 'node:http2';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { buildConfig, readSettings } from '../../src/config/config.ts';
import { createLogger } from '../../src/observability/logger.ts';
import { createUserServer, type UserServer } from '../../src/server/user-server.ts';
import { ROOT, makeCerts, standaloneServerSettings } from '../harness/certs.ts';
import { loopbackDialer } from '../harness/loopback-dialer.ts';

/**
 * h2spec v2.2.1 (RFC 7540 / 7541 conformance, 145 cases) against the HTTPS front over TLS. Several cases
 * need a 2xx answer with a body (flow control, padding, trailers), so requests go the whole proxy path:
 * the user-server routes /cluster-a/api to a service-proxy stand-in on loopback through a dialer of the
 * test's own. No ANP is involved, so the file runs once (vitest.config.ts, ONCE): h2spec exercises the
 * front, which is the same in both proxy modes.
 */

const H2SPEC = path.join(ROOT, '.cache/tools/h2spec');

/**
 * Cases the front fails, each for a documented choice of Node 24's HTTP/2 layer (nghttp2 1.70); a bare
 * `http2.createSecureServer` fails exactly these nine as well. None lets a client do more than it could
 * against a conforming server: each is a frame ignored or a connection closed where a stream error was due.
 */
const KNOWN_FAILURES: Record<string, string> = {
  // nghttp2 keeps no state for closed streams, so it cannot tell "closed by RST_STREAM" or "closed normally"
  // from "closed long ago" and, as RFC 9113 §5.1 allows for frames that may have been in flight, ignores
  // frames on them instead of answering STREAM_CLOSED.
  'http2/5.1/8': 'DATA after the client\'s RST_STREAM is ignored, not STREAM_CLOSED',
  'http2/5.1/9': 'HEADERS after the client\'s RST_STREAM is ignored, not STREAM_CLOSED',
  'http2/5.1/11': 'DATA on a closed stream is ignored, not STREAM_CLOSED',
  'http2/5.1/12': 'HEADERS on a closed stream is ignored, not STREAM_CLOSED',
  // nghttp2 only raises a connection error for a stream id it is sure about (its comment: a client may
  // legitimately send trailers for a stream the server already reset); stream 3 after 5 is ignored.
  'http2/5.1.1/2': 'a HEADERS stream id lower than an earlier one is ignored, not a PROTOCOL_ERROR',
  // nghttp2 no longer implements the RFC 7540 priority tree (RFC 9113 §5.3.2 deprecates it) and drops
  // PRIORITY frames unread, so malformed ones cause no error either.
  'http2/5.3.1/2': 'a PRIORITY frame making a stream depend on itself is ignored',
  'http2/6.3/1': 'a PRIORITY frame on stream 0 is ignored',
  // Node (src/node_http2.cc) treats a PING ACK it did not ask for as a connection error: no legitimate
  // client sends one, so it is closed instead of ignored.
  'http2/6.7/2': 'an unsolicited PING ACK closes the connection',
  // nghttp2 answers a stream window pushed past 2^31-1 with GOAWAY FLOW_CONTROL_ERROR for the whole
  // connection instead of RST_STREAM: stricter than the RFC's stream error.
  'http2/6.9.1/3': 'a stream window overflow is a connection error, not a stream error',
};

const dir = mkdtempSync(path.join(os.tmpdir(), 'h2spec-'));
const certs = makeCerts(path.join(dir, 'certs'));
let upstream: https.Server;
let us: UserServer;
let port: number;

/** Well under h2spec's 2 s timeout per case. */
const ANSWER_DELAY_MS = 300;

beforeAll(async () => {
  if (!existsSync(H2SPEC)) throw new Error(`${H2SPEC} is missing: run scripts/build-test-deps.sh`);
  // The service-proxy stand-in: reads the whole request body, then answers 200 with 1 KiB after a pause.
  // The pause keeps each stream half-closed (remote) while h2spec probes it: answered at once, a stream can
  // close before h2spec's next frame arrives on a busy machine, and case 5.1/6 then meets 5.1/12's closed
  // stream instead (seen once in the full suite).
  upstream = https.createServer({ cert: certs.read('service-proxy.crt'), key: certs.read('service-proxy.key') }, (req, res) => {
    req.resume();
    req.on('end', () => setTimeout(() => res.writeHead(200, { 'content-type': 'text/plain' }).end('x'.repeat(1024)), ANSWER_DELAY_MS));
  });
  upstream.listen(0, '127.0.0.1');
  await once(upstream, 'listening');
  const upstreamPort = (upstream.address() as net.AddressInfo).port;
  const settings: Record<string, string> = { ...standaloneServerSettings(certs, dir), 'log-level': 'fatal' };
  const config = buildConfig(readSettings(Object.entries(settings).map(([k, v]) => `--${k}=${v}`), {}).values);
  us = createUserServer(config, createLogger(config.log.level), { dialer: loopbackDialer(upstreamPort) });
  port = (await us.listen()).port;
});

afterAll(async () => {
  await us?.close();
  upstream?.close();
  rmSync(dir, { recursive: true, force: true });
});

interface Case {
  id: string;
  title: string;
  outcome: 'passed' | 'failed' | 'skipped';
}

/** h2spec's JUnit report: suites carry the section (`package`), cases are numbered within it as on its command line. */
function readJunit(file: string): Case[] {
  const xml = readFileSync(file, 'utf8');
  const cases: Case[] = [];
  for (const suite of xml.matchAll(/<testsuite [^>]*package="([^"]+)"[^>]*>([\s\S]*?)<\/testsuite>/g)) {
    let n = 0;
    for (const c of suite[2]!.matchAll(/<testcase [^>]*classname="([^"]*)"[^>]*?(?:\/>|>([\s\S]*?)<\/testcase>)/g)) {
      const body = c[2] ?? '';
      const outcome = /<(error|failure)\b/.test(body) ? 'failed' : /<skipped\b/.test(body) ? 'skipped' : 'passed';
      cases.push({ id: `${suite[1]}/${++n}`, title: c[1]!, outcome });
    }
  }
  return cases;
}

test('h2spec: at least 136 of 145 cases pass, every failure is a known Node/nghttp2 choice, and the front still serves', async () => {
  const report = path.join(dir, 'junit.xml');
  // -o 2: h2spec's default per-case wait; the failing cases that expect an error wait it out (about 15 s in all).
  const child = spawn(H2SPEC, ['-t', '-k', '-h', '127.0.0.1', '-p', String(port), '-P', '/cluster-a/api', '-o', '2', '-j', report], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr.on('data', (c: Buffer) => (output += c.toString()));
  const killer = setTimeout(() => child.kill('SIGKILL'), 100_000);
  const [code] = (await once(child, 'exit')) as [number | null];
  clearTimeout(killer);
  // h2spec exits 1 when any case fails.
  expect(code, output).toBe(1);

  const cases = readJunit(report);
  expect(cases).toHaveLength(145);
  const failed = cases.filter((c) => c.outcome === 'failed');
  const unexplained = failed.filter((c) => KNOWN_FAILURES[c.id] === undefined).map((c) => `${c.id} ${c.title}`);
  expect(unexplained, output).toEqual([]);
  expect(cases.filter((c) => c.outcome === 'skipped')).toEqual([]);
  const passed = cases.filter((c) => c.outcome === 'passed').length;
  expect(passed).toBe(145 - failed.length);
  expect(passed).toBeGreaterThanOrEqual(145 - Object.keys(KNOWN_FAILURES).length);
  expect(output).toMatch(/145 tests, \d+ passed, 0 skipped, \d+ failed/);

  // Nothing h2spec sent broke the server for the next client.
  const session = http2.connect(`https://127.0.0.1:${port}`, { ca: certs.read('ca.crt'), servername: 'localhost' });
  try {
    const stream = session.request({ ':path': '/cluster-a/api' });
    stream.resume();
    const [headers] = (await once(stream, 'response')) as [http2.IncomingHttpHeaders];
    expect(headers[':status']).toBe(200);
    await once(stream, 'end');
  } finally {
    session.close();
  }
}, 120_000);
