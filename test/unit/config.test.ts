import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { ConfigError, buildConfig, helpText, loadConfig, parseDuration, readSettings, type Config } from '../../src/config/config.ts';
import { IGNORED_FLAGS, SETTINGS, type SettingName, type SettingSpec } from '../../src/config/settings.ts';

const dir = mkdtempSync(join(tmpdir(), 'config-test-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string): string {
  const p = join(dir, name);
  writeFileSync(p, 'not really PEM\n');
  return p;
}

const FILES = {
  serverCert: file('server.crt'),
  serverKey: file('server.key'),
  serviceProxyCa: file('service-proxy-ca.crt'),
  proxyCa: file('proxy-ca.crt'),
  proxyCert: file('proxy.crt'),
  proxyKey: file('proxy.key'),
};
const MISSING = join(dir, 'does-not-exist.pem');
const SOCKET = join(dir, 'proxy.sock');

const COMMON = ['--server-cert', FILES.serverCert, '--server-key', FILES.serverKey, '--service-proxy-ca-cert', FILES.serviceProxyCa];
const UDS = [...COMMON, '--proxy-server-uds', SOCKET];
const TCP_FILES = ['--proxy-ca-cert', FILES.proxyCa, '--proxy-cert', FILES.proxyCert, '--proxy-key', FILES.proxyKey];
const TCP = [...COMMON, '--proxy-server-host', 'proxy.example', ...TCP_FILES];

function config(argv: readonly string[], env: NodeJS.ProcessEnv = {}): Config {
  return buildConfig(readSettings(argv, env).values);
}

function configError(argv: readonly string[], env: NodeJS.ProcessEnv = {}): ConfigError {
  try {
    config(argv, env);
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error(`no ConfigError for ${JSON.stringify(argv)}`);
}

function specOf(name: SettingName): SettingSpec {
  const s = SETTINGS.find((x) => x.flag === name);
  if (s === undefined) throw new Error(`no setting ${name}`);
  return s;
}

function label(name: SettingName): string {
  return `--${name} (${specOf(name).env})`;
}

describe('readSettings', () => {
  test('defaults are used when neither a flag nor an environment variable is set', () => {
    const { values, help } = readSettings([], {});
    expect(help).toBe(false);
    expect(values['server-port']).toBe('9092');
    expect(values['connect-timeout']).toBe('10s');
    expect(values['target-template']).toBe('cluster-{hash}.open-cluster-management.proxy:7443');
    expect(values['server-cert']).toBeUndefined();
    expect('server-cert' in values).toBe(false);
  });

  test('an environment variable beats the default', () => {
    expect(readSettings([], { CLUSTER_PROXY_SERVER_PORT: '1234' }).values['server-port']).toBe('1234');
  });

  test('a flag beats the environment variable', () => {
    const env = { CLUSTER_PROXY_SERVER_PORT: '1234', CLUSTER_PROXY_LOG_LEVEL: 'debug' };
    const { values } = readSettings(['--server-port', '5678', '--log-level=warn'], env);
    expect(values['server-port']).toBe('5678');
    expect(values['log-level']).toBe('warn');
  });

  test('environment variables of other programs are ignored', () => {
    const { values } = readSettings([], { PORT: '1', SERVER_PORT: '2', CLUSTER_PROXY_PORT: '3' });
    expect(values['server-port']).toBe('9092');
  });

  test('--help is reported', () => {
    expect(readSettings(['--help'], {}).help).toBe(true);
  });

  test('an unknown flag is a ConfigError that points to --help', () => {
    expect(() => readSettings(['--no-such-flag', 'x'], {})).toThrow(ConfigError);
    expect(() => readSettings(['--no-such-flag', 'x'], {})).toThrow(/no-such-flag.*see --help/s);
  });

  test('a positional argument is a ConfigError', () => {
    expect(() => readSettings(['serve'], {})).toThrow(ConfigError);
  });

  test('a flag without its value is a ConfigError', () => {
    expect(() => readSettings(['--server-port'], {})).toThrow(ConfigError);
  });
});

describe('buildConfig', () => {
  test('a full TCP configuration is built with the defaults filled in', () => {
    expect(config(TCP)).toEqual({
      server: {
        address: '0.0.0.0',
        port: 9092,
        certFile: FILES.serverCert,
        keyFile: FILES.serverKey,
        minVersion: 'TLSv1.2',
        maxHeaderBytes: 65536,
        maxConnections: 10_000,
        requestHeadersTimeoutMs: 32_000,
        unknownProtocolTimeoutMs: 10_000,
        http2: {
          maxConcurrentStreams: 250,
          streamResetBurst: 1000,
          streamResetRate: 33,
          maxSessionInvalidFrames: 100,
          maxSessionRejectedStreams: 100,
          maxHeaderListPairs: 128,
          maxSessionMemory: 10,
          idleTimeoutMs: 72_000,
        },
      },
      health: { address: '0.0.0.0', port: 8000 },
      proxyMode: 'grpc',
      grpc: { connections: 4, keepaliveIntervalMs: 300_000 },
      proxy: {
        transport: 'tcp',
        host: 'proxy.example',
        port: 8090,
        servername: 'proxy.example',
        caFile: FILES.proxyCa,
        certFile: FILES.proxyCert,
        keyFile: FILES.proxyKey,
      },
      serviceProxyCaFile: FILES.serviceProxyCa,
      impersonation: 'pass',
      exposedServicesFile: undefined,
      targetTemplate: 'cluster-{hash}.open-cluster-management.proxy:7443',
      timeouts: { connectMs: 10_000, tlsHandshakeMs: 10_000, responseHeadersMs: 120_000, clientStallMs: 60_000, idleTunnelMs: 90_000, tunnelPingMs: 60_000, upgradeIdleMs: 4 * 3_600_000, cancelledDrainMs: 5_000 },
      limits: { maxTunnelsPerCluster: 64, maxStreamsPerCluster: 2000, maxStreamsPerTunnel: 100, maxRequestsPerCluster: 4096, maxUpgradesPerCluster: 1000, maxClusters: 2000, cancelledDrainBytes: 1_048_576, cancelledTunnelsPerConnection: 32 },
      agentRetryAfterSeconds: 1,
      tls: { reloadIntervalMs: 60_000 },
      shutdown: { delayMs: 5_000, graceMs: 20_000 },
      metrics: { clusterLabelLimit: 0 },
      clusterView: true,
      log: { level: 'info', access: true, bufferBytes: 16_777_216, flushTimeoutMs: 5_000 },
    } satisfies Config);
  });

  test('a UDS configuration needs no proxy certificates', () => {
    expect(config(UDS).proxy).toEqual({ transport: 'uds', path: SOCKET });
  });

  test('--proxy-server-name overrides the TLS server name', () => {
    const proxy = config([...TCP, '--proxy-server-name', 'anp.internal', '--proxy-server-port', '443']).proxy;
    expect(proxy).toMatchObject({ transport: 'tcp', host: 'proxy.example', servername: 'anp.internal', port: 443 });
  });

  test('settings from the environment reach the config and flags still win', () => {
    const env = {
      CLUSTER_PROXY_SERVER_PORT: '1111',
      CLUSTER_PROXY_HEALTH_PORT: '2222',
      CLUSTER_PROXY_ACCESS_LOG: 'false',
      CLUSTER_PROXY_SERVER_CERT: MISSING,
    };
    const c = config([...UDS, '--health-port', '3333'], env);
    expect(c.server.port).toBe(1111);
    expect(c.health.port).toBe(3333);
    expect(c.log.access).toBe(false);
    expect(c.server.certFile).toBe(FILES.serverCert);
  });

  test('file settings can come from the environment alone', () => {
    const env = {
      CLUSTER_PROXY_SERVER_CERT: FILES.serverCert,
      CLUSTER_PROXY_SERVER_KEY: FILES.serverKey,
      CLUSTER_PROXY_SERVICE_PROXY_CA_CERT: FILES.serviceProxyCa,
      CLUSTER_PROXY_PROXY_SERVER_UDS: SOCKET,
    };
    expect(config([], env).server.keyFile).toBe(FILES.serverKey);
  });

  test('a missing --server-cert is a ConfigError naming the flag and its environment variable', () => {
    const err = configError(UDS.filter((_, i) => i !== 0 && i !== 1));
    expect(err).toBeInstanceOf(ConfigError);
    expect(err.name).toBe('ConfigError');
    expect(err.message).toContain('--server-cert (CLUSTER_PROXY_SERVER_CERT)');
    expect(err.message).toContain('is required');
  });

  test.each([
    ['server-key', '--server-key'],
    ['service-proxy-ca-cert', '--service-proxy-ca-cert'],
  ] as const)('a missing --%s is a ConfigError naming it', (name, flag) => {
    const i = UDS.indexOf(flag);
    const argv = UDS.filter((_, j) => j !== i && j !== i + 1);
    expect(configError(argv).message).toContain(`${label(name)} is required`);
  });

  test.each([
    ['server-cert', [...UDS, '--server-cert', MISSING]],
    ['server-key', [...UDS, '--server-key', MISSING]],
    ['service-proxy-ca-cert', [...UDS, '--service-proxy-ca-cert', MISSING]],
    ['proxy-ca-cert', [...TCP, '--proxy-ca-cert', MISSING]],
    ['proxy-cert', [...TCP, '--proxy-cert', MISSING]],
    ['proxy-key', [...TCP, '--proxy-key', MISSING]],
  ] as const)('a nonexistent --%s file is rejected naming the setting and the file', (name, argv) => {
    const err = configError(argv);
    expect(err.message).toContain(label(name));
    expect(err.message).toContain(JSON.stringify(MISSING));
    expect(err.message).toContain('does not exist');
  });

  test('--proxy-server-uds and --proxy-server-host together are rejected', () => {
    const err = configError([...UDS, '--proxy-server-host', 'proxy.example']);
    expect(err.message).toContain(label('proxy-server-uds'));
    expect(err.message).toContain(label('proxy-server-host'));
    expect(err.message).toContain('exclude each other');
  });

  test('without --proxy-server-host or --proxy-server-uds the error names both', () => {
    const err = configError(COMMON);
    expect(err.message).toContain(label('proxy-server-host'));
    expect(err.message).toContain('--proxy-server-uds');
  });

  test.each(['proxy-ca-cert', 'proxy-cert', 'proxy-key'] as const)('TCP mode requires --%s', (name) => {
    const i = TCP.indexOf(`--${name}`);
    const argv = TCP.filter((_, j) => j !== i && j !== i + 1);
    const err = configError(argv);
    expect(err.message).toContain(label(name));
    expect(err.message).toContain('is required when the proxy-server is reached over TCP');
  });

  test('--connect-timeout below 1s is rejected and 1s is accepted', () => {
    expect(configError([...UDS, '--connect-timeout', '999ms']).message).toContain(`${label('connect-timeout')} must be at least 1s`);
    expect(configError([...UDS, '--connect-timeout', '0']).message).toContain(label('connect-timeout'));
    expect(config([...UDS, '--connect-timeout', '1s']).timeouts.connectMs).toBe(1000);
  });

  test.each([
    ['connect-timeout', '10'],
    ['connect-timeout', '10sec'],
    ['tls-handshake-timeout', '-1s'],
    ['response-headers-timeout', '1m30s'],
    ['client-stall-timeout', '5 s'],
    ['idle-tunnel-timeout', '.5s'],
    ['agent-retry-after', '5S'],
    ['agent-retry-after', 'five seconds'],
  ] as const)('--%s=%s is rejected as a bad duration', (name, value) => {
    const err = configError([...UDS, `--${name}=${value}`]);
    expect(err.message).toContain(label(name));
    expect(err.message).toContain('must be a duration');
    expect(err.message).toContain(JSON.stringify(value));
  });

  test.each(['tls-handshake-timeout', 'idle-tunnel-timeout'] as const)('--%s=0 is rejected', (name) => {
    expect(configError([...UDS, `--${name}`, '0']).message).toBe(`${label(name)} must be greater than 0`);
  });

  test('0 disables the response-headers, client-stall and upgrade-idle timeouts', () => {
    const t = config([...UDS, '--response-headers-timeout', '0', '--client-stall-timeout', '0s', '--upgrade-idle-timeout', '0']).timeouts;
    expect(t.responseHeadersMs).toBe(0);
    expect(t.clientStallMs).toBe(0);
    expect(t.upgradeIdleMs).toBe(0);
  });

  test.each([
    ['server-port', '65536'],
    ['server-port', '-1'],
    ['health-port', 'http'],
    ['health-port', '80.5'],
    ['proxy-server-port', ' 8090'],
    ['proxy-server-port', '1e3'],
  ] as const)('--%s=%j is rejected as a bad port', (name, value) => {
    const argv = name === 'proxy-server-port' ? TCP : UDS;
    const err = configError([...argv, `--${name}=${value}`]);
    expect(err.message).toContain(label(name));
    expect(err.message).toContain('must be a port number');
  });

  test('port 0 and port 65535 are accepted', () => {
    const c = config([...UDS, '--server-port', '0', '--health-port', '65535']);
    expect(c.server.port).toBe(0);
    expect(c.health.port).toBe(65535);
  });

  test.each([
    ['max-tunnels-per-cluster', '0'],
    ['max-streams-per-cluster', '-5'],
    ['max-requests-per-cluster', '1.5'],
    ['max-clusters', 'many'],
    ['max-upgrades-per-cluster', '0'],
    ['max-header-bytes', '9007199254740993'],
  ] as const)('--%s=%s is rejected as a bad count', (name, value) => {
    const err = configError([...UDS, `--${name}=${value}`]);
    expect(err.message).toContain(label(name));
    expect(err.message).toContain('whole number of at least 1');
  });

  test('counts reach the limits', () => {
    const c = config([...UDS, '--max-tunnels-per-cluster', '1', '--max-streams-per-cluster', '2', '--max-requests-per-cluster', '3', '--max-clusters', '4', '--max-header-bytes', '16384', '--max-upgrades-per-cluster', '5', '--max-streams-per-tunnel', '0', '--cancelled-drain-bytes', '0', '--cancelled-tunnels-per-connection', '6']);
    expect(c.limits).toEqual({ maxTunnelsPerCluster: 1, maxStreamsPerCluster: 2, maxStreamsPerTunnel: 0, maxRequestsPerCluster: 3, maxUpgradesPerCluster: 5, maxClusters: 4, cancelledDrainBytes: 0, cancelledTunnelsPerConnection: 6 });
    expect(c.server.maxHeaderBytes).toBe(16384);
  });

  test.each([
    ['tls-min-version', 'TLSv1.1'],
    ['tls-min-version', 'tlsv1.3'],
    ['log-level', 'verbose'],
  ] as const)('--%s=%s is rejected and the choices are listed', (name, value) => {
    const err = configError([...UDS, `--${name}`, value]);
    expect(err.message).toContain(label(name));
    expect(err.message).toContain(`must be one of ${specOf(name).choices?.join(', ')}`);
  });

  test('enum values are accepted', () => {
    const c = config([...UDS, '--tls-min-version', 'TLSv1.3', '--log-level', 'silent']);
    expect(c.server.minVersion).toBe('TLSv1.3');
    expect(c.log.level).toBe('silent');
  });

  test('--access-log takes true, false, 1 and 0 and nothing else', () => {
    expect(config([...UDS, '--access-log', 'false']).log.access).toBe(false);
    expect(config([...UDS, '--access-log', '0']).log.access).toBe(false);
    expect(config([...UDS, '--access-log', '1']).log.access).toBe(true);
    expect(configError([...UDS, '--access-log', 'yes']).message).toContain(`${label('access-log')} must be true or false`);
  });

  test('--agent-retry-after is rounded to whole seconds and at least 1', () => {
    expect(config([...UDS, '--agent-retry-after', '1500ms']).agentRetryAfterSeconds).toBe(2);
    expect(config([...UDS, '--agent-retry-after', '2m']).agentRetryAfterSeconds).toBe(120);
    expect(config([...UDS, '--agent-retry-after', '100ms']).agentRetryAfterSeconds).toBe(1);
    expect(config([...UDS, '--agent-retry-after', '0']).agentRetryAfterSeconds).toBe(1);
  });

  test('a bad --target-template is a ConfigError naming the setting', () => {
    const err = configError([...UDS, '--target-template', 'fixed.example:7443']);
    expect(err.message).toContain(`${label('target-template')}: target template`);
    expect(configError([...UDS, '--target-template', '{hash}.example']).message).toContain(label('target-template'));
  });

  test('a good --target-template is kept as written', () => {
    expect(config([...UDS, '--target-template', '{cluster}.agents:8443']).targetTemplate).toBe('{cluster}.agents:8443');
  });
});

describe('loadConfig', () => {
  test('--help returns without validating anything', () => {
    expect(loadConfig(['--help'], {})).toEqual({ help: true });
  });

  test('without --help the config is built', () => {
    const { config: c, help } = loadConfig(UDS, {});
    expect(help).toBe(false);
    expect(c?.proxy.transport).toBe('uds');
  });

  test('without --help a bad config throws', () => {
    expect(() => loadConfig([], {})).toThrow(ConfigError);
  });
});

describe('parseDuration', () => {
  const spec = specOf('connect-timeout');

  test.each([
    ['0', 0],
    ['0s', 0],
    ['500ms', 500],
    ['10s', 10_000],
    ['1.5s', 1500],
    ['2m', 120_000],
    ['1h', 3_600_000],
    ['0.5ms', 1],
  ])('%s is %i ms', (text, ms) => {
    expect(parseDuration(text, spec)).toBe(ms);
  });

  test.each(['', '10', 's', '1d', '1us', '-5s', '+5s', '1 s', '1m30s', 'Infinity'])('%j is rejected', (text) => {
    expect(() => parseDuration(text, spec)).toThrow(ConfigError);
  });
});

describe('helpText', () => {
  const text = helpText();

  test('every flag and environment variable is listed', () => {
    for (const s of SETTINGS) {
      expect(text).toContain(`--${s.flag} <${s.type}>`);
      expect(text).toContain(s.env);
      expect(text).toContain(s.help);
    }
  });

  test('defaults are shown and required settings have none', () => {
    expect(text).toContain('(default 9092)');
    expect(text).toContain('(default cluster-{hash}.open-cluster-management.proxy:7443)');
    const certLine = text.split('\n').find((l) => l.includes(specOf('server-cert').help));
    expect(certLine).toBeDefined();
    expect(certLine).not.toContain('(default');
  });

  test('every environment variable is CLUSTER_PROXY_ plus the flag in upper snake case', () => {
    for (const s of SETTINGS) expect(s.env).toBe(`CLUSTER_PROXY_${s.flag.toUpperCase().replaceAll('-', '_')}`);
    expect(new Set(SETTINGS.map((s) => s.env)).size).toBe(SETTINGS.length);
  });
});

describe('operations settings', () => {
  test('the per-cluster metric label is off by default and takes 0 or a positive count', () => {
    expect(config(UDS).metrics.clusterLabelLimit).toBe(0);
    expect(config([...UDS, '--metrics-cluster-labels=25']).metrics.clusterLabelLimit).toBe(25);
    expect(() => config([...UDS, '--metrics-cluster-labels=-1'])).toThrow(/--metrics-cluster-labels \(CLUSTER_PROXY_METRICS_CLUSTER_LABELS\) must be a whole number/);
    expect(() => config([...UDS, '--metrics-cluster-labels=lots'])).toThrow(ConfigError);
  });

  test('shutdown delay and grace, and the certificate re-read interval, are durations', () => {
    expect(config([...UDS, '--shutdown-delay=0', '--shutdown-grace=1m', '--tls-reload-interval=0'])).toMatchObject({
      shutdown: { delayMs: 0, graceMs: 60_000 },
      tls: { reloadIntervalMs: 0 },
    });
    expect(() => config([...UDS, '--shutdown-grace=forever'])).toThrow(/--shutdown-grace \(CLUSTER_PROXY_SHUTDOWN_GRACE\) must be a duration/);
  });

  test('the README configuration table has a row for every setting', () => {
    const rows = readFileSync(new URL('../../README.md', import.meta.url), 'utf8').split('\n').filter((l) => l.startsWith('| `--'));
    for (const s of SETTINGS) expect(rows.some((r) => r.includes(`\`--${s.flag}\``))).toBe(true);
  });
});

describe('review fixes', () => {
  test('durations longer than a Node timer can hold are refused, naming the setting', () => {
    expect(() => parseDuration('600h', SETTINGS.find((s) => s.flag === 'connect-timeout')!)).toThrow(/--connect-timeout .*at most 2147483647 ms/);
    expect(parseDuration('596h', SETTINGS.find((s) => s.flag === 'connect-timeout')!)).toBe(596 * 3_600_000);
  });

  test('an empty environment variable falls back to the default', () => {
    expect(readSettings([], { CLUSTER_PROXY_SERVER_PORT: '' }).values['server-port']).toBe('9092');
  });
});

describe('drop-in for the Go user-server', () => {
  // The user-server container's arguments in ACM's chart (upstream-user-server.md section 1.1), with files
  // of this test in place of the mounted Secrets.
  const ACM_ARGS = [
    'user-server',
    '--host=proxy-entrypoint.multicluster-engine.svc',
    '--port=8090',
    `--proxy-ca-cert=${FILES.proxyCa}`,
    `--proxy-cert=${FILES.proxyCert}`,
    `--proxy-key=${FILES.proxyKey}`,
    `--server-cert=${FILES.serverCert}`,
    `--server-key=${FILES.serverKey}`,
    '--server-port=9092',
    `--service-proxy-ca-cert=${FILES.serviceProxyCa}`,
    '--agent-install-namespace=open-cluster-management-agent-addon',
  ];
  const ACM_PROXY = {
    transport: 'tcp',
    host: 'proxy-entrypoint.multicluster-engine.svc',
    port: 8090,
    servername: 'proxy-entrypoint.multicluster-engine.svc',
    caFile: FILES.proxyCa,
    certFile: FILES.proxyCert,
    keyFile: FILES.proxyKey,
  };

  test("ACM's argument list parses as it is: gRPC to proxy-entrypoint:8090 with the mounted certificates", () => {
    const c = config(ACM_ARGS);
    expect(c.proxyMode).toBe('grpc');
    expect(c.proxy).toEqual(ACM_PROXY);
    expect(c.server).toMatchObject({ port: 9092, certFile: FILES.serverCert, keyFile: FILES.serverKey });
    expect(c.serviceProxyCaFile).toBe(FILES.serviceProxyCa);
    expect(c.log.level).toBe('info');
  });

  test('the Go image command in front (/cluster-proxy user-server), or no subcommand at all, parse the same', () => {
    const expected = config(ACM_ARGS);
    expect(config(['/cluster-proxy', ...ACM_ARGS])).toEqual(expected);
    expect(config(['/usr/local/bin/cluster-proxy', ...ACM_ARGS])).toEqual(expected);
    expect(config(['cluster-proxy', ...ACM_ARGS])).toEqual(expected);
    expect(config(ACM_ARGS.slice(1))).toEqual(expected);
  });

  test('--host and --port take their value as the next argument too', () => {
    const separate = ACM_ARGS.slice(3).concat(['--host', 'anp.example', '--port', '8091']);
    expect(config(separate).proxy).toMatchObject({ host: 'anp.example', port: 8091, servername: 'anp.example' });
    expect(readSettings(['--host', 'a.example', '--port', '1'], {}).values).toMatchObject({ 'proxy-server-host': 'a.example', 'proxy-server-port': '1' });
  });

  test('_ and - are the same in flag names, aliases included', () => {
    expect(config([...UDS, '--server_port=7000', '--max_tunnels_per_cluster', '3'])).toMatchObject({ server: { port: 7000 }, limits: { maxTunnelsPerCluster: 3 } });
    const underscored = ACM_ARGS.map((a) => a.replace(/^--([^=]+)/, (flag) => flag.replaceAll('-', '_').replace(/^__/, '--')));
    expect(underscored).toContain('--proxy_ca_cert=' + FILES.proxyCa);
    expect(underscored).toContain('--agent_install_namespace=open-cluster-management-agent-addon');
    expect(config(underscored)).toEqual(config(ACM_ARGS));
  });

  test('a flag given twice takes the last value, whichever spelling and form', () => {
    expect(config([...UDS, '--server-port=1', '--server-port=2']).server.port).toBe(2);
    expect(config([...UDS, '--server-port', '1', '--server_port=3']).server.port).toBe(3);
    expect(config([...UDS, '--server_port=3', '--server-port', '4']).server.port).toBe(4);
    expect(config([...ACM_ARGS, '--host=a.example', '--host=b.example']).proxy).toMatchObject({ host: 'b.example' });
  });

  test('an alias and its flag with different values are refused; with the same value they are accepted', () => {
    expect(configError([...TCP, '--host=other.example']).message).toBe(
      '--proxy-server-host and --host name the same setting with different values ("proxy.example" and "other.example"): pick one',
    );
    expect(configError([...ACM_ARGS, '--proxy-server-port', '9000']).message).toContain('--proxy-server-port and --port name the same setting');
    expect(configError([...ACM_ARGS, '--proxy_server_port=9000']).message).toContain('--proxy-server-port and --port name the same setting');
    expect(config([...TCP, '--host=proxy.example']).proxy).toMatchObject({ host: 'proxy.example' });
    expect(config([...ACM_ARGS, '--proxy-server-port=8090']).proxy).toMatchObject({ port: 8090 });
  });

  test('an alias beats the environment variable as its flag does', () => {
    expect(config(ACM_ARGS, { CLUSTER_PROXY_PROXY_SERVER_HOST: 'env.example', CLUSTER_PROXY_PROXY_SERVER_PORT: '1' }).proxy).toEqual(ACM_PROXY);
  });

  test('--agent-install-namespace is accepted and ignored, in every form, but needs its value as pflag does', () => {
    expect(config([...UDS, '--agent-install-namespace', 'ns', '--server-port=1'])).toEqual(config([...UDS, '--server-port=1']));
    expect(config([...UDS, '--agent_install_namespace=ns'])).toEqual(config(UDS));
    expect(readSettings(['--agent-install-namespace', 'ns'], {}).values).toEqual(readSettings([], {}).values);
    expect(configError([...UDS, '--agent-install-namespace']).message).toMatch(/--agent-install-namespace <value>' argument missing/);
  });

  test.each([['-v=4'], ['-v', '4'], ['--v=4'], ['--v', '4'], ['-v4'], ['-v=10'], ['--v', '5']])("klog's %s turns on debug logging", (...v) => {
    expect(config([...UDS, ...v]).log.level).toBe('debug');
  });

  test("klog's -v below 4 changes nothing, and an explicit log level wins over any -v", () => {
    expect(config([...UDS, '-v=3']).log.level).toBe('info');
    expect(config([...UDS, '-v', '0']).log.level).toBe('info');
    expect(config([...UDS, '--v=-1']).log.level).toBe('info');
    expect(config([...UDS, '-v=2'], { CLUSTER_PROXY_LOG_LEVEL: 'warn' }).log.level).toBe('warn');
    expect(config([...UDS, '-v=9', '--log-level=warn']).log.level).toBe('warn');
    expect(config([...UDS, '--log-level=error', '--v', '9']).log.level).toBe('error');
    expect(config([...UDS, '-v=9'], { CLUSTER_PROXY_LOG_LEVEL: 'error' }).log.level).toBe('error');
    // An empty variable is unset, as for every setting.
    expect(config([...UDS, '-v=9'], { CLUSTER_PROXY_LOG_LEVEL: '' }).log.level).toBe('debug');
  });

  test.each([['-v=high'], ['--v=4.5'], ['-v='], ['--v', 'x'], ['-vv']])("klog's %s is refused: -v takes a whole number", (...v) => {
    const err = configError([...UDS, ...v]);
    expect(err.message).toMatch(/^-v \(klog verbosity\) must be a whole number, got "/);
  });

  test('-v without a value is refused', () => {
    expect(configError([...UDS, '-v']).message).toMatch(/-v, --v <value>' argument missing/);
  });

  test('positional arguments other than the leading subcommand are still errors, naming the argument', () => {
    expect(configError(['user-server', 'extra', ...UDS]).message).toMatch(/Unexpected argument 'extra'/);
    expect(configError(['controllers', ...UDS]).message).toMatch(/Unexpected argument 'controllers'/);
    expect(configError([...UDS, 'user-server']).message).toMatch(/Unexpected argument 'user-server'/);
    expect(configError(['user-server', 'user-server', ...UDS]).message).toMatch(/Unexpected argument 'user-server'/);
    expect(configError(['/cluster-proxy', 'controllers', ...UDS]).message).toBe('"/cluster-proxy" is followed by "controllers": only its user-server subcommand is served here; see --help');
    expect(configError(['/cluster-proxy', ...UDS]).message).toContain(`"/cluster-proxy" is followed by ${JSON.stringify(UDS[0])}`);
    expect(configError(['/bin/my-cluster-proxy', 'user-server', ...UDS]).message).toMatch(/Unexpected argument '\/bin\/my-cluster-proxy'/);
    expect(configError([...UDS, '--', 'user-server']).message).toMatch(/Unexpected argument 'user-server'/);
  });

  test('a first argument that is a flag ending in cluster-proxy is a flag, not the Go command', () => {
    expect(readSettings(['--proxy-server-name=a/cluster-proxy', '--server-port=1'], {}).values).toMatchObject({ 'proxy-server-name': 'a/cluster-proxy', 'server-port': '1' });
  });

  test('unknown flags are still errors, named as typed', () => {
    expect(configError([...UDS, '--no-such-flag=1']).message).toMatch(/Unknown option '--no-such-flag'/);
    expect(configError([...UDS, '--no_such_flag=1']).message).toMatch(/Unknown option '--no_such_flag'/);
    expect(configError([...ACM_ARGS, '--kubeconfig=/k']).message).toMatch(/Unknown option '--kubeconfig'/);
    expect(configError([...UDS, '-x']).message).toMatch(/Unknown option '-x'/);
  });

  test('--help names the aliases, the ignored flags and -v', () => {
    const text = helpText();
    expect(text).toContain('--proxy-server-host <string>, --host   CLUSTER_PROXY_PROXY_SERVER_HOST');
    expect(text).toContain('--proxy-server-port <port>, --port   CLUSTER_PROXY_PROXY_SERVER_PORT');
    expect(text).toContain('--agent-install-namespace is accepted and ignored');
    expect(text).toContain("klog's -v=N is accepted: 4 or more means\n--log-level=debug unless --log-level or CLUSTER_PROXY_LOG_LEVEL is set");
    expect(readSettings(['user-server', '--help'], {}).help).toBe(true);
  });

  test('the aliases are the Go flag names, and no alias is also a flag or ignored', () => {
    const aliases = (SETTINGS as readonly SettingSpec[]).flatMap((s) => (s.aliases ?? []).map((a) => [a, s.flag]));
    expect(aliases).toEqual([
      ['host', 'proxy-server-host'],
      ['port', 'proxy-server-port'],
    ]);
    const flags = new Set<string>([...SETTINGS.map((s) => s.flag), ...IGNORED_FLAGS]);
    for (const [alias] of aliases) expect(flags.has(alias!)).toBe(false);
  });
});

describe('proxy mode settings', () => {
  test('gRPC is the default; http-connect is the other mode; anything else is refused', () => {
    expect(config(UDS).proxyMode).toBe('grpc');
    expect(config([...UDS, '--proxy-mode=http-connect']).proxyMode).toBe('http-connect');
    expect(config([...UDS, '--proxy_mode', 'grpc'], { CLUSTER_PROXY_PROXY_MODE: 'http-connect' }).proxyMode).toBe('grpc');
    expect(config(UDS, { CLUSTER_PROXY_PROXY_MODE: 'http-connect' }).proxyMode).toBe('http-connect');
    expect(configError([...UDS, '--proxy-mode=connect']).message).toBe(`${label('proxy-mode')} must be one of grpc, http-connect, got "connect"`);
    expect(configError([...UDS, '--proxy-mode=GRPC']).message).toContain(label('proxy-mode'));
  });

  test.each(['grpc', 'http-connect'])('%s mode is reached over TCP with mutual TLS or over a Unix socket, validated alike', (mode) => {
    expect(config([...TCP, `--proxy-mode=${mode}`]).proxy).toMatchObject({ transport: 'tcp', host: 'proxy.example', port: 8090 });
    expect(config([...UDS, `--proxy-mode=${mode}`]).proxy).toEqual({ transport: 'uds', path: SOCKET });
    const noKey = TCP.slice(0, -2);
    expect(configError([...noKey, `--proxy-mode=${mode}`]).message).toContain(`${label('proxy-key')} is required when the proxy-server is reached over TCP`);
    expect(configError([...UDS, '--proxy-server-host=proxy.example', `--proxy-mode=${mode}`]).message).toContain('exclude each other');
  });

  test('gRPC connections: 4 by default, any count of at least 1, from flag or environment', () => {
    expect(config(UDS).grpc.connections).toBe(4);
    expect(config([...UDS, '--proxy-connections=1']).grpc.connections).toBe(1);
    expect(config(UDS, { CLUSTER_PROXY_PROXY_CONNECTIONS: '16' }).grpc.connections).toBe(16);
    expect(config([...UDS, '--proxy-mode=http-connect', '--proxy-connections=2']).grpc.connections).toBe(2);
    expect(configError([...UDS, '--proxy-connections=0']).message).toBe(`${label('proxy-connections')} must be a whole number of at least 1, got "0"`);
    expect(configError([...UDS, '--proxy-connections=two']).message).toContain(label('proxy-connections'));
  });

  test('the keepalive interval is 5m by default, 0 turns it off, and it takes any duration from 5m up', () => {
    expect(config(UDS).grpc.keepaliveIntervalMs).toBe(300_000);
    expect(config([...UDS, '--proxy-keepalive-interval=0']).grpc.keepaliveIntervalMs).toBe(0);
    expect(config([...UDS, '--proxy-keepalive-interval=0s']).grpc.keepaliveIntervalMs).toBe(0);
    expect(config([...UDS, '--proxy-keepalive-interval=300s']).grpc.keepaliveIntervalMs).toBe(300_000);
    expect(config([...UDS, '--proxy-keepalive-interval=1h']).grpc.keepaliveIntervalMs).toBe(3_600_000);
    expect(config(UDS, { CLUSTER_PROXY_PROXY_KEEPALIVE_INTERVAL: '10m' }).grpc.keepaliveIntervalMs).toBe(600_000);
  });

  test.each(['1ms', '30s', '299999ms', '4m'])('a keepalive interval of %s is refused, saying why', (value) => {
    expect(configError([...UDS, `--proxy-keepalive-interval=${value}`]).message).toBe(
      `${label('proxy-keepalive-interval')} must be 0 (off) or at least 5m: ANP's gRPC frontend answers pings closer than 5 minutes with GOAWAY too_many_pings, which drops every tunnel on the connection`,
    );
  });

  test('a keepalive interval that is no duration is refused as such', () => {
    expect(configError([...UDS, '--proxy-keepalive-interval=5']).message).toContain(`${label('proxy-keepalive-interval')} must be a duration`);
  });

  test('the help of the connection settings reads for both modes', () => {
    expect(specOf('connect-timeout').help).toMatch(/CONNECT reply.*gRPC DIAL_RSP.*above ANP's 5s agent dial timeout/);
    expect(specOf('proxy-connections').help).toMatch(/^gRPC mode: .*ignored in http-connect mode/);
    expect(specOf('proxy-keepalive-interval').help).toMatch(/0 disables.*at least 5m.*too_many_pings/);
    expect(specOf('proxy-mode')).toMatchObject({ type: 'enum', default: 'grpc', choices: ['grpc', 'http-connect'], env: 'CLUSTER_PROXY_PROXY_MODE' });
    expect(specOf('proxy-connections')).toMatchObject({ type: 'count', default: '4', env: 'CLUSTER_PROXY_PROXY_CONNECTIONS' });
    expect(specOf('proxy-keepalive-interval')).toMatchObject({ type: 'duration', default: '5m', env: 'CLUSTER_PROXY_PROXY_KEEPALIVE_INTERVAL' });
  });
});

describe('limits on the client side', () => {
  test('defaults come from the anchors: 250 streams, nghttp2 reset bucket, 32s headers, 10,000 connections', () => {
    expect(config(UDS).server).toMatchObject({
      maxHeaderBytes: 65536,
      maxConnections: 10_000,
      requestHeadersTimeoutMs: 32_000,
      unknownProtocolTimeoutMs: 10_000,
      http2: { maxConcurrentStreams: 250, streamResetBurst: 1000, streamResetRate: 33, maxSessionInvalidFrames: 100, maxSessionRejectedStreams: 100, maxHeaderListPairs: 128, maxSessionMemory: 10, idleTimeoutMs: 72_000 },
    });
  });

  test('each is set by flag or environment variable', () => {
    const env = { CLUSTER_PROXY_HTTP2_MAX_CONCURRENT_STREAMS: '100', CLUSTER_PROXY_MAX_CONNECTIONS: '50', CLUSTER_PROXY_REQUEST_HEADERS_TIMEOUT: '10s' };
    const c = config([...UDS, '--http2-stream-reset-burst=200', '--http2-stream-reset-rate=10', '--http2-max-invalid-frames=7', '--http2-max-rejected-streams=8', '--http2-max-header-pairs=64', '--http2-max-session-memory=4', '--http2-idle-timeout=30s', '--unknown-protocol-timeout=2s', '--max-connections=60'], env);
    expect(c.server).toMatchObject({
      maxConnections: 60,
      requestHeadersTimeoutMs: 10_000,
      unknownProtocolTimeoutMs: 2_000,
      http2: { maxConcurrentStreams: 100, streamResetBurst: 200, streamResetRate: 10, maxSessionInvalidFrames: 7, maxSessionRejectedStreams: 8, maxHeaderListPairs: 64, maxSessionMemory: 4, idleTimeoutMs: 30_000 },
    });
  });

  test.each(['max-connections', 'http2-max-concurrent-streams', 'http2-stream-reset-burst', 'http2-stream-reset-rate', 'http2-max-invalid-frames', 'http2-max-rejected-streams', 'http2-max-session-memory'] as const)('--%s=0 is refused', (name) => {
    expect(configError([...UDS, `--${name}=0`]).message).toBe(`${label(name)} must be a whole number of at least 1, got "0"`);
  });

  test.each(['http2-max-concurrent-streams', 'http2-stream-reset-burst', 'max-header-bytes'] as const)('--%s above 2^32-1 (an HTTP/2 SETTINGS value) is refused', (name) => {
    expect(configError([...UDS, `--${name}=4294967296`]).message).toBe(`${label(name)} must be at most 4294967295, got "4294967296"`);
    expect(() => config([...UDS, `--${name}=4294967295`])).not.toThrow();
  });

  test('header pairs start at 4, the request pseudo-headers', () => {
    expect(configError([...UDS, '--http2-max-header-pairs=3']).message).toBe(`${label('http2-max-header-pairs')} must be at least 4 (the four request pseudo-headers count), got 3`);
    expect(config([...UDS, '--http2-max-header-pairs=4']).server.http2.maxHeaderListPairs).toBe(4);
  });

  test.each(['request-headers-timeout', 'unknown-protocol-timeout'] as const)('--%s cannot be turned off', (name) => {
    expect(configError([...UDS, `--${name}=0`]).message).toBe(`${label(name)} must be greater than 0`);
    expect(configError([...UDS, `--${name}=32`]).message).toContain('must be a duration');
  });

  test('--help says where the defaults come from', () => {
    const text = helpText();
    expect(text).toContain("(Go's default; Envoy, HAProxy and the apiserver use 100, nginx 128, Node 2^32-1) (default 250)");
    expect(text).toMatch(/--request-headers-timeout <duration>.*\n.*408.*bodies and responses have no time limit \(Go and OCM ReadHeaderTimeout\) \(default 32s\)/);
    expect(text).toContain("(Envoy's edge listener limit) (default 10000)");
  });
});
