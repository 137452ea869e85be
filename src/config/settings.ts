import { DEFAULT_TARGET_TEMPLATE } from '../tunnel/target-host.ts';

/**
 * Every setting has a flag, an environment variable and a default. The table is the single source for
 * parsing, validation messages, --help and the README.
 */
export type SettingType = 'string' | 'path' | 'port' | 'duration' | 'count' | 'boolean' | 'enum';

export interface SettingSpec {
  flag: string;
  env: string;
  type: SettingType;
  default: string | undefined;
  help: string;
  choices?: readonly string[];
  /** Other flag names for the same setting: the Go user-server's, so its Deployment arguments work as they are. */
  aliases?: readonly string[];
}

const env = (flag: string): string => `CLUSTER_PROXY_${flag.toUpperCase().replaceAll('-', '_')}`;

function spec(flag: string, type: SettingType, def: string | undefined, help: string, choices?: readonly string[], aliases?: readonly string[]): SettingSpec {
  const s: SettingSpec = { flag, env: env(flag), type, default: def, help };
  if (choices !== undefined) s.choices = choices;
  if (aliases !== undefined) s.aliases = aliases;
  return s;
}

export const SETTINGS = [
  spec('server-address', 'string', '0.0.0.0', 'address the HTTPS server listens on'),
  spec('server-port', 'port', '9092', 'HTTPS port for clients (HTTP/2 and HTTP/1.1)'),
  spec('server-cert', 'path', undefined, 'serving certificate (PEM), e.g. from the OpenShift service CA (required)'),
  spec('server-key', 'path', undefined, 'serving private key (PEM) (required)'),
  spec('tls-min-version', 'enum', 'TLSv1.2', 'lowest TLS version offered to clients', ['TLSv1.2', 'TLSv1.3']),
  spec('health-address', 'string', '0.0.0.0', 'address of the plain-HTTP health and metrics server'),
  spec('health-port', 'port', '8000', 'port of /healthz, /readyz and /metrics'),
  spec('proxy-mode', 'enum', 'grpc', "the ANP proxy-server's frontend protocol, as its --mode: grpc (ANP's default, what ACM and OCM deploy) or http-connect", ['grpc', 'http-connect']),
  spec('proxy-server-host', 'string', undefined, 'ANP proxy-server host (frontend over mutual TLS)', undefined, ['host']),
  spec('proxy-server-port', 'port', '8090', 'ANP proxy-server frontend port', undefined, ['port']),
  spec('proxy-server-name', 'string', undefined, 'TLS server name expected from the proxy-server (default: --proxy-server-host)'),
  spec('proxy-server-uds', 'path', undefined, 'Unix socket of the ANP proxy-server frontend, instead of host and port (plain, no TLS, in either mode)'),
  spec('proxy-ca-cert', 'path', undefined, 'CA that verifies the proxy-server (TCP only)'),
  spec('proxy-cert', 'path', undefined, 'client certificate for the proxy-server (TCP only)'),
  spec('proxy-key', 'path', undefined, 'client key for the proxy-server (TCP only)'),
  spec('service-proxy-ca-cert', 'path', undefined, "CA that verifies each cluster's service-proxy (required)"),
  spec('impersonation', 'enum', 'pass', "client Impersonate-User, -Group, -Uid and -Extra-* headers (kubectl --as): pass them on, so the managed cluster's RBAC decides (the impersonate verb), as direct access would; strip them; or refuse such requests with 403", ['pass', 'strip', 'refuse']),
  spec('exposed-services-file', 'path', undefined, "allowlist of the Services reachable through .../services/<svc>/proxy-service/ paths: the YAML of OCM's cluster-proxy-exposed-services ConfigMap (a list of namespace, service and optional port and protocol), re-read when it changes; unset, missing or empty denies every Service (403); kube-apiserver paths are not affected"),
  spec('target-template', 'string', DEFAULT_TARGET_TEMPLATE, "host:port the cluster's agent dials; {hash} = first 48 hex chars of sha256(cluster), {cluster} = the name"),
  spec('connect-timeout', 'duration', '10s', "reaching the proxy-server and its answer to a dial (the CONNECT reply, or the gRPC DIAL_RSP); keep it above ANP's 5s agent dial timeout"),
  spec('proxy-connections', 'count', '4', 'gRPC mode: HTTP/2 connections kept to the proxy-server; tunnels are streams spread over them, and behind a Service they reach different proxy-server replicas (ignored in http-connect mode, where each tunnel is a connection)'),
  spec('proxy-keepalive-interval', 'duration', '5m', "gRPC mode: PING interval on connections that carry tunnels (0 disables); at least 5m, because ANP's frontend answers faster pings with GOAWAY too_many_pings, dropping every tunnel on the connection"),
  spec('tls-handshake-timeout', 'duration', '10s', 'TLS handshake with the service-proxy inside the tunnel'),
  spec('response-headers-timeout', 'duration', '120s', 'wait for response headers once a request is sent (0 disables); streams have no timeout'),
  spec('client-stall-timeout', 'duration', '60s', 'longest a client may leave a response unread before it is cut off (0 disables)'),
  spec('cancelled-drain-bytes', 'count', '1048576', 'a short request whose client goes away after it was sent is left to finish on its HTTP/1.1 tunnel, the rest of its response read and dropped, up to this many bytes, so the pooled tunnel is kept instead of torn down and dialled again (a client cancelling requests in a loop would otherwise churn dials onto ANP and the agent); 0 tears the tunnel down at once'),
  spec('cancelled-drain-timeout', 'duration', '5s', 'longest such a cancelled response is left to finish before its tunnel is torn down'),
  spec('cancelled-tunnels-per-connection', 'count', '32', 'HTTP/2: cancelled requests that could not be left to finish (see --cancelled-drain-bytes) and so cost a pooled tunnel; a client connection that reaches this many gets GOAWAY (ENHANCE_YOUR_CALM)'),
  spec('upgrade-idle-timeout', 'duration', '4h', 'an upgraded session (exec, attach, port-forward) with no bytes either way this long is closed, as the kubelet does (0 disables)'),
  spec('idle-tunnel-timeout', 'duration', '90s', 'pooled tunnels idle this long are closed'),
  spec('tunnel-ping-interval', 'duration', '60s', 'HTTP/2 PING on the tunnels of watches and logs -f, busy or idle; a tunnel whose PING is still unanswered at the next one is reset, so its watches fail and clients re-watch (0 disables; HTTP/1.1 tunnels are not pinged)'),
  spec('max-tunnels-per-cluster', 'count', '64', 'keep-alive tunnels per cluster for ordinary requests'),
  spec('max-streams-per-cluster', 'count', '2000', 'tunnels per cluster for long-running requests (watch, logs -f)'),
  spec('max-streams-per-tunnel', 'count', '100', 'long-running requests sharing one tunnel as HTTP/2 streams, when the service-proxy offers h2 (the Go one does); 0 keeps them on HTTP/1.1, one tunnel each'),
  spec('max-requests-per-cluster', 'count', '4096', 'requests in flight or queued per cluster; more get 429'),
  spec('max-upgrades-per-cluster', 'count', '1000', 'upgraded sessions (exec, attach, port-forward) open per cluster, each on a tunnel of its own; more get 429'),
  spec('max-clusters', 'count', '2000', 'clusters with open tunnel pools at once'),
  spec('max-header-bytes', 'count', '65536', 'largest request header block accepted from clients, HTTP/1.1 (431) and HTTP/2 (SETTINGS_MAX_HEADER_LIST_SIZE; the stream is reset) alike'),
  spec('max-connections', 'count', '10000', "open client TLS connections, HTTP/2 and HTTP/1.1 together; more are closed as soon as they are accepted (Envoy's edge listener limit)"),
  spec('request-headers-timeout', 'duration', '32s', "HTTP/1.1: a client must send a request's whole header block within this long, or gets 408 and is disconnected (slowloris); bodies and responses have no time limit (Go and OCM ReadHeaderTimeout)"),
  spec('http2-max-concurrent-streams', 'count', '250', "HTTP/2 streams a client may have open on one connection (SETTINGS_MAX_CONCURRENT_STREAMS), more are refused (Go's default; Envoy, HAProxy and the apiserver use 100, nginx 128, Node 2^32-1)"),
  spec('http2-stream-reset-burst', 'count', '1000', 'HTTP/2 rapid reset: RST_STREAM frames a client may send at once before the connection gets GOAWAY (a token bucket refilled at --http2-stream-reset-rate)'),
  spec('http2-stream-reset-rate', 'count', '33', 'HTTP/2 rapid reset: RST_STREAM frames per second a client may keep sending'),
  spec('http2-max-invalid-frames', 'count', '100', 'HTTP/2 invalid frames tolerated on one connection before it is closed'),
  spec('http2-max-rejected-streams', 'count', '100', 'HTTP/2 streams refused on one connection (over the stream or memory limit) before it is closed'),
  spec('http2-max-header-pairs', 'count', '128', 'HTTP/2 header fields per request, pseudo-headers included (at least 4); more reset the stream'),
  spec('http2-max-session-memory', 'count', '10', 'megabytes one HTTP/2 connection may hold (streams, header tables, queued output); beyond it new streams are refused'),
  spec('http2-idle-timeout', 'duration', '72s', 'an HTTP/2 connection with no request open for this long gets GOAWAY'),
  spec('unknown-protocol-timeout', 'duration', '10s', 'a TLS client that negotiated neither h2 nor http/1.1 is disconnected after this long'),
  spec('agent-retry-after', 'duration', '1s', 'Retry-After sent with 503 when a cluster has no connected agent; client-go retries such a 503 up to 10 times, this long apart'),
  spec('tls-reload-interval', 'duration', '1m', 'also re-read certificate files and --exposed-services-file this often, besides watching their directories (0: watch only)'),
  spec('shutdown-delay', 'duration', '5s', 'on SIGTERM, keep accepting connections this long while /readyz fails, so load balancers stop sending first'),
  spec('shutdown-grace', 'duration', '20s', 'then wait this long for requests in flight; watches, logs -f and upgraded sessions are then closed'),
  spec('metrics-cluster-labels', 'count', '0', 'clusters that get their own label on requests_by_cluster_total (the first seen); the rest count as "other"; 0 leaves the metric out'),
  spec('cluster-view', 'boolean', 'true', 'keep per-cluster state (agent state, tunnels, requests and errors of the last 5 minutes, dial latency, bytes, last error) for GET /clusters and the page at / on the health port, for the --max-clusters clusters seen last; false leaves both out'),
  spec('log-level', 'enum', 'info', 'pino log level', ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']),
  spec('access-log', 'boolean', 'true', 'log one line per request'),
  spec('log-buffer-bytes', 'count', '16777216', 'log output waiting for stdout is kept up to this size (at least 16384); beyond it lines are dropped and counted (log_lines_dropped_total) instead of growing memory or blocking requests'),
  spec('log-flush-timeout', 'duration', '5s', 'at exit, log output still waiting for stdout gets this long, then is dropped, so a stalled log collector cannot keep the process alive'),
] as const satisfies readonly SettingSpec[];

export type SettingName = (typeof SETTINGS)[number]['flag'];

/**
 * Flags of the Go user-server that mean nothing here but must not stop a Deployment written for it:
 * `--agent-install-namespace` has been unused upstream too since 2025.
 */
export const IGNORED_FLAGS = ['agent-install-namespace'] as const;
