#!/usr/bin/env bash
# Makes development and test certificates into the folder given (default: .cache/dev-certs).
# Keys are written there and never committed. Layout:
#   ca.{crt,key}             signs every certificate below (plays the cluster-proxy signer and service CA)
#   other-ca.{crt,key}       an unrelated CA, for "wrong CA" tests
#   proxy-server.{crt,key}   ANP proxy-server, frontend and agent port (SAN localhost, 127.0.0.1)
#   user-client.{crt,key}    the user-server's client certificate for the proxy-server
#   proxy-agent.{crt,key}    ANP agents' client certificate
#   service-proxy.{crt,key}  service-proxy (SAN *.open-cluster-management.proxy, localhost, 127.0.0.1)
#   user-server.{crt,key}    the user-server's serving certificate (SAN localhost, 127.0.0.1, the Service names)
#   rogue-client.{crt,key}   a client certificate signed by other-ca
set -euo pipefail
out="${1:-$(cd "$(dirname "$0")/.." && pwd)/.cache/dev-certs}"
days="${CERT_DAYS:-30}"
mkdir -p "$out"
cd "$out"
umask 077

ca() { # name subject
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.crt" -days "$days" -subj "/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}
leaf() { # name ca usage san
  local ext
  ext=$(mktemp)
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$3"
    [ -n "$4" ] && echo "subjectAltName=$4"
  } >"$ext"
  openssl req -new -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "/CN=$1" 2>/dev/null
  openssl x509 -req -in "$1.csr" -CA "$2.crt" -CAkey "$2.key" -CAcreateserial -days "$days" -extfile "$ext" -out "$1.crt" 2>/dev/null
  rm -f "$1.csr" "$ext"
}

ca ca "cluster-proxy dev CA"
ca other-ca "unrelated dev CA"
leaf proxy-server ca serverAuth "DNS:localhost,IP:127.0.0.1"
leaf user-client ca clientAuth ""
leaf proxy-agent ca clientAuth ""
leaf service-proxy ca serverAuth "DNS:*.open-cluster-management.proxy,DNS:localhost,IP:127.0.0.1"
leaf user-server ca serverAuth "DNS:localhost,IP:127.0.0.1,DNS:cluster-proxy-addon-user,DNS:cluster-proxy-addon-user.open-cluster-management.svc"
leaf rogue-client other-ca clientAuth ""
chmod 644 ./*.crt
echo "certificates in $out"
