import { pino, type Logger, type DestinationStream } from 'pino';

/**
 * Paths pino censors wherever they appear in a log object. Tokens travel in Authorization headers, cookies
 * and query strings such as `?access_token=`; the proxy never logs headers or queries on purpose, and this
 * list makes sure an error object carrying a request cannot leak them either.
 */
export const REDACT_PATHS = [
  'authorization',
  'cookie',
  'token',
  '*.authorization',
  '*.Authorization',
  '*.cookie',
  '*.Cookie',
  '*.token',
  '*.headers.authorization',
  '*.headers.cookie',
  '*.headers["set-cookie"]',
  '*.*.authorization',
  '*.*.cookie',
  'err.config',
];

export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { name: 'cluster-proxy-user-server' },
      redact: { paths: REDACT_PATHS, censor: '[REDACTED]' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    destination,
  );
}
