#!/usr/bin/env node
import { ConfigError, helpText, loadConfig } from './config/config.ts';
import { createHealthServer, listenHealth } from './health/health-server.ts';
import { createLogger, stdoutLog } from './observability/logger.ts';
import { Metrics } from './observability/metrics.ts';
import { createUserServer } from './server/user-server.ts';

async function main(): Promise<number> {
  let loaded;
  try {
    loaded = loadConfig(process.argv.slice(2), process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`cluster-proxy-user-server: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
  if (loaded.help || loaded.config === undefined) {
    process.stdout.write(`${helpText()}\n`);
    return 0;
  }
  const config = loaded.config;
  const metrics = new Metrics({ clusterLabelLimit: config.metrics.clusterLabelLimit });
  const logOutput = stdoutLog(config.log.bufferBytes, (lines) => metrics.logLinesDropped(lines));
  const logger = createLogger(config.log.level, logOutput.stream);
  let server;
  try {
    server = createUserServer(config, logger, { metrics });
  } catch (err) {
    // Certificates that do not load are a configuration error too: name the setting and stop.
    if (err instanceof ConfigError) {
      process.stderr.write(`cluster-proxy-user-server: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
  let draining = false;
  const health = createHealthServer({ ready: server.ready, draining: () => draining }, server.metrics.registry, server.clusters);
  const healthAddress = await listenHealth(health, config.health.address, config.health.port);
  const address = await server.listen();
  logger.info({ address: address.address, port: address.port, healthPort: healthAddress.port, proxy: config.proxy.transport === 'tcp' ? `${config.proxy.host}:${config.proxy.port}` : config.proxy.path, proxyMode: config.proxyMode }, 'user-server listening');

  await new Promise<void>((resolve) => {
    const stop = (signal: string): void => {
      if (draining) return;
      draining = true;
      logger.info({ signal }, 'shutting down');
      resolve();
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  await server.shutdown(config.shutdown.delayMs, config.shutdown.graceMs);
  health.close();
  await logOutput.close(config.log.flushTimeoutMs);
  return 0;
}

// An explicit exit: the log has had its bounded flush, and a write still blocked on a stalled stdout (in
// libuv's thread pool) would otherwise keep the process alive. stderr is synchronous on pipes and files.
main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`cluster-proxy-user-server: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
