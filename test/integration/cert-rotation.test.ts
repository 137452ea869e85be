import { X509Certificate } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import type { TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { startChain, type Chain, type RunningUserServer } from '../harness/chain.ts';
import { issueCa, issueLeaf } from '../harness/issue-certs.ts';
import { SecretVolume } from '../harness/secret-volume.ts';

// Certificates rotate under load, through the real chain, without a restart of the user-server:
// the serving certificate, the ANP client certificate and CA, and the service-proxy CA. Each load
// request opens a new client connection and (via /close, which ends its tunnel) a new tunnel, so every
// request needs all three TLS materials afresh.
let chain: Chain;
let us: RunningUserServer;
let ca: Buffer;
let serving: SecretVolume;
let anpClient: SecretVolume;
let serviceProxyCa: SecretVolume;
beforeAll(async () => {
  chain = await startChain();
  const c = chain.certs;
  const vol = (name: string) => path.join(chain.dir, 'volumes', name);
  serving = new SecretVolume(vol('serving'), { 'tls.crt': c.read('user-server.crt'), 'tls.key': c.read('user-server.key') });
  anpClient = new SecretVolume(vol('anp-client'), { 'ca.crt': c.read('ca.crt'), 'tls.crt': c.read('user-client.crt'), 'tls.key': c.read('user-client.key') });
  serviceProxyCa = new SecretVolume(vol('service-proxy-ca'), { 'ca.crt': c.read('ca.crt') });
  us = await chain.startUserServer({
    'server-cert': serving.file('tls.crt'),
    'server-key': serving.file('tls.key'),
    'proxy-ca-cert': anpClient.file('ca.crt'),
    'proxy-cert': anpClient.file('tls.crt'),
    'proxy-key': anpClient.file('tls.key'),
    'service-proxy-ca-cert': serviceProxyCa.file('ca.crt'),
  });
  ca = c.read('ca.crt');
});
afterAll(async () => {
  await us?.close();
  await chain?.close();
});

/** Requests in a few bounded loops, each on a new TLS connection; counts outcomes and serving serials. */
class Load {
  ok = 0;
  failures: string[] = [];
  readonly servingSerials: string[] = [];
  private running = true;
  private readonly workers: Promise<void>[];

  constructor(paths: string[], concurrency = 3, maxMs = 60_000) {
    const deadline = Date.now() + maxMs;
    this.workers = Array.from({ length: concurrency }, async (_v, w) => {
      for (let i = w; this.running && Date.now() < deadline; i++) await this.one(paths[i % paths.length]!);
    });
  }

  get sent(): number {
    return this.ok + this.failures.length;
  }

  async until(cond: () => boolean, timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!cond()) {
      if (Date.now() > deadline) throw new Error(`load condition not met; ok=${this.ok} failures=${this.failures.slice(0, 3).join(' | ')}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  /** Waits for `n` more successful requests. */
  async more(n: number): Promise<void> {
    const target = this.ok + n;
    await this.until(() => this.ok >= target);
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.workers);
  }

  private one(p: string): Promise<void> {
    return new Promise((resolve) => {
      const req = https.request({ host: '127.0.0.1', port: us.port, path: p, ca, servername: 'localhost', agent: false }, (res) => {
        const serial = (res.socket as TLSSocket).getPeerCertificate().serialNumber;
        let body = '';
        res.setEncoding('utf8').on('data', (c: string) => (body += c));
        res.on('end', () => {
          if (res.statusCode === 200) {
            this.ok++;
            if (this.servingSerials.at(-1) !== serial) this.servingSerials.push(serial);
          } else {
            this.failures.push(`${p}: ${res.statusCode} ${body.slice(0, 300)}`);
          }
          resolve();
        });
        res.on('error', (err) => {
          this.failures.push(`${p}: ${err.message}`);
          resolve();
        });
      });
      req.setTimeout(20_000, () => req.destroy(new Error('client timeout')));
      req.on('error', (err) => {
        this.failures.push(`${p}: ${err.message}`);
        resolve();
      });
      req.end();
    });
  }
}

const LOAD_PATHS = ['/cluster-a/close', '/cluster-a/api/v1/pods', '/cluster-a/close', '/1-cluster-b/api/v1/pods'];

const reloads = (source: string, msg = 'reloaded certificates; new connections use them'): number =>
  us.logs.filter((l) => l.includes(`"tls":"${source}"`) && l.includes(msg)).length;

async function waitForLog(count: () => number, atLeast: number): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (count() < atLeast) {
    if (Date.now() > deadline) throw new Error(`no reload logged:\n${us.logs.filter((l) => l.includes('"tls"')).join('\n')}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

const serialOf = (pem: Buffer): string => new X509Certificate(pem).serialNumber;

const totals = { sent: 0, failed: 0 };
function record(load: Load): void {
  totals.sent += load.sent;
  totals.failed += load.failures.length;
}

describe('certificate rotation under load', () => {
  test('serving certificate: new connections get the new one, no request fails', async () => {
    const oldSerial = serialOf(chain.certs.read('user-server.crt'));
    const next = issueLeaf(chain.certs.dir, 'user-server-2', { certFile: chain.certs.file('ca.crt'), keyFile: chain.certs.file('ca.key') }, 'serverAuth', 'DNS:localhost,IP:127.0.0.1');
    const newSerial = serialOf(next.cert);
    const load = new Load(LOAD_PATHS);
    await load.more(20);
    const before = reloads('serving');
    serving.write({ 'tls.crt': next.cert, 'tls.key': next.key });
    await waitForLog(() => reloads('serving'), before + 1);
    await load.until(() => load.servingSerials.at(-1) === newSerial);
    await load.more(20);
    await load.stop();
    record(load);
    expect(load.failures).toEqual([]);
    expect(load.servingSerials[0]).toBe(oldSerial);
    expect(load.servingSerials.at(-1)).toBe(newSerial);
  });

  test('ANP client certificate and CA move to a new CA; the proxy-server then trusts only the new one', async () => {
    const dir = chain.certs.dir;
    const ca2 = issueCa(dir, 'anp-ca-2');
    const client2 = issueLeaf(dir, 'user-client-2', ca2, 'clientAuth');
    const server2 = issueLeaf(dir, 'proxy-server-2', ca2, 'serverAuth', 'DNS:localhost,IP:127.0.0.1');
    const bundle = Buffer.concat([chain.certs.read('ca.crt'), ca2.cert]);
    const bundleFile = path.join(dir, 'anp-bundle.crt');
    writeFileSync(bundleFile, bundle);
    // Step 1, as an operator would: the proxy-server trusts both CAs (it restarts: no load meanwhile).
    await chain.anp.restart({ clientCaFile: bundleFile });
    await waitForChain();

    const load = new Load(LOAD_PATHS);
    await load.more(20);
    const before = reloads('proxy_client');
    // Step 2, under load: the user-server's client certificate comes from the new CA; it trusts both.
    anpClient.write({ 'ca.crt': bundle, 'tls.crt': client2.cert, 'tls.key': client2.key });
    await waitForLog(() => reloads('proxy_client'), before + 1);
    await load.more(30);
    await load.stop();
    record(load);
    expect(load.failures).toEqual([]);

    // Step 3: the proxy-server moves to the new CA alone (its own certificate too). Only the rotated
    // client certificate and CA bundle can pass now.
    await chain.anp.restart({ clientCaFile: ca2.certFile, certFile: server2.certFile, keyFile: server2.keyFile });
    await waitForChain();
  });

  test('service-proxy CA: trust both, the service-proxy moves to the new CA, then trust only the new one', async () => {
    const dir = chain.certs.dir;
    const ca3 = issueCa(dir, 'service-proxy-ca-3');
    const sp3 = issueLeaf(dir, 'service-proxy-3', ca3, 'serverAuth', 'DNS:*.open-cluster-management.proxy,DNS:localhost,IP:127.0.0.1');
    const load = new Load(['/cluster-a/close', '/cluster-a/api/v1/pods']);
    await load.more(20);
    const before = reloads('service_proxy_ca');
    serviceProxyCa.write({ 'ca.crt': Buffer.concat([chain.certs.read('ca.crt'), ca3.cert]) });
    await waitForLog(() => reloads('service_proxy_ca'), before + 1);
    await load.more(20);
    // The peers that need the new certificate take it for their new connections.
    chain.clusters.a.serviceProxy.setCertificate(sp3.cert, sp3.key);
    chain.clusters.b.serviceProxy.setCertificate(sp3.cert, sp3.key);
    await load.more(20);
    serviceProxyCa.write({ 'ca.crt': ca3.cert });
    await waitForLog(() => reloads('service_proxy_ca'), before + 2);
    const dials = await us.server.metrics.successfulDials();
    await load.more(30);
    await load.stop();
    record(load);
    expect(load.failures).toEqual([]);
    // New tunnels (every /close ends one) verified the service-proxy against the new CA alone.
    expect(await us.server.metrics.successfulDials()).toBeGreaterThan(dials + 5);
  });

  test('a bad write (garbage key, mismatched pair, empty CA) is refused and counted; serving goes on with the old material', async () => {
    const goodCert = readFileSync(serving.file('tls.crt'));
    const servingNow = serialOf(goodCert);
    const failuresBefore = us.logs.filter((l) => l.includes('certificate reload failed')).length;
    const load = new Load(LOAD_PATHS);
    await load.more(10);
    serving.write({ 'tls.crt': goodCert, 'tls.key': '-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n' });
    await waitForLog(() => us.logs.filter((l) => l.includes('certificate reload failed')).length, failuresBefore + 1);
    await load.more(10);
    serving.write({ 'tls.crt': goodCert, 'tls.key': chain.certs.read('proxy-agent.key') });
    await waitForLog(() => us.logs.filter((l) => l.includes('certificate reload failed')).length, failuresBefore + 2);
    serviceProxyCa.write({ 'ca.crt': 'not a certificate\n' });
    await waitForLog(() => us.logs.filter((l) => l.includes('certificate reload failed')).length, failuresBefore + 3);
    await load.more(20);
    await load.stop();
    record(load);
    expect(load.failures).toEqual([]);
    expect(load.servingSerials.every((s) => s === servingNow)).toBe(true);
    const failed = us.logs.filter((l) => l.includes('certificate reload failed')).slice(-3).map((l) => JSON.parse(l));
    expect(failed.map((l) => l.tls)).toEqual(['serving', 'serving', 'service_proxy_ca']);
    expect(failed[1].reason).toMatch(/does not match/);
    expect(failed[2].reason).toMatch(/no PEM certificate/);
    const text = await us.server.metrics.registry.metrics();
    expect(text).toMatch(/tls_reloads_total\{source="serving",outcome="failure"\} 2/);
    expect(text).toMatch(/tls_reloads_total\{source="service_proxy_ca",outcome="failure"\} 1/);
    console.log(`rotation: ${totals.sent} requests sent, ${totals.failed} failed`);
  });
});

/** After a proxy-server restart: agents reconnect and requests through both clusters work again. */
async function waitForChain(): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const load = new Load(['/cluster-a/api/v1/pods', '/1-cluster-b/api/v1/pods'], 1, 2_000);
    await new Promise((r) => setTimeout(r, 200));
    await load.stop();
    if (load.ok > 0 && load.failures.length === 0) return;
    if (Date.now() > deadline) throw new Error(`chain not back after the proxy-server restart: ${load.failures.slice(-2).join(' | ')}`);
  }
}
