// The test suite's service-proxy double (test/harness/service-proxy-double.ts) as its own process:
// TLS on <host>:7443, forwarding to the target given. Prints {"host": ...} when listening. Idle
// connections are kept, as the Go service-proxy (no IdleTimeout) keeps them; Node's 5 s default would
// close every pooled tunnel of a system while the other systems take their turn.
import { readFileSync } from 'node:fs';
import { startServiceProxyDouble } from '../../test/harness/service-proxy-double.ts';

const [host, certFile, keyFile, target] = process.argv.slice(2);
if (host === undefined || certFile === undefined || keyFile === undefined || target === undefined) {
  process.stderr.write('usage: service-proxy.ts <host> <cert> <key> <target url>\n');
  process.exit(2);
}
const double = await startServiceProxyDouble({ host, port: 7443, cert: readFileSync(certFile), key: readFileSync(keyFile), kubeTarget: target, keepAliveTimeoutMs: 0 });
process.stdout.write(`${JSON.stringify({ host, port: double.address.port })}\n`);
process.on('SIGTERM', () => {
  void double.close().finally(() => process.exit(0));
});
