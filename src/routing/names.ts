/** Name checks from Kubernetes apimachinery validation, done with char codes: they run on every request. */

const MAX_SUBDOMAIN = 253;
const MAX_LABEL = 63;

function isLowerAlnum(c: number): boolean {
  return (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39);
}

/** RFC 1123 label: lowercase alphanumerics and '-', starting and ending alphanumeric, up to 63 characters. */
export function isDns1123Label(s: string): boolean {
  return s.length <= MAX_LABEL && isLabelShape(s);
}

function isLabelShape(s: string): boolean {
  const n = s.length;
  if (n === 0) return false;
  if (!isLowerAlnum(s.charCodeAt(0)) || !isLowerAlnum(s.charCodeAt(n - 1))) return false;
  for (let i = 1; i < n - 1; i++) {
    const c = s.charCodeAt(i);
    if (!isLowerAlnum(c) && c !== 0x2d) return false;
  }
  return true;
}

/**
 * RFC 1123 subdomain, the rule for ManagedCluster names: dot-separated labels, up to 253 characters.
 * A name may start with a digit (ACM customers have such clusters, see upstream-user-server.md section 3).
 */
export function isDns1123Subdomain(s: string): boolean {
  const n = s.length;
  if (n === 0 || n > MAX_SUBDOMAIN) return false;
  let start = 0;
  for (let i = 0; i <= n; i++) {
    if (i === n || s.charCodeAt(i) === 0x2e) {
      // apimachinery's IsDNS1123Subdomain bounds only the whole name, not each label.
      if (!isLabelShape(s.slice(start, i))) return false;
      start = i + 1;
    }
  }
  return true;
}

/** A port number as written in a URL: 1-65535, decimal, no sign or leading zeros. */
export function isPortNumber(s: string): boolean {
  if (s.length === 0 || s.length > 5 || s.charCodeAt(0) === 0x30) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x30 || c > 0x39) return false;
  }
  return Number(s) <= 65535;
}
