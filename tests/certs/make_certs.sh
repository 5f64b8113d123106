#!/bin/sh
# Regenerates the test certificates of tests/test_tls.py (run from any
# directory; needs the openssl CLI).  Committed output, valid 100 years:
#   ca.pem                 the test CA (its key is not kept)
#   localhost.pem/.key     CN=localhost, SAN DNS:localhost, IP:127.0.0.1; by the CA
#   alt.pem/.key           SAN DNS:alt.evpy.test; by the CA (SNI switching)
#   client.pem/.key        CN=evpy test client, clientAuth; by the CA
#   selfsigned.pem/.key    SAN DNS:localhost, IP:127.0.0.1; self-signed (untrusted)
set -eu
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
days=36500
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out "$1" 2>/dev/null; }

key "$tmp/ca.key"
openssl req -x509 -new -key "$tmp/ca.key" -days $days -subj "/CN=evpy test CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.pem

leaf() {  # name subject extensions
    key "$1.key"
    openssl req -new -key "$1.key" -subj "$2" -out "$tmp/$1.csr"
    printf '%s\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n' \
        "$3" > "$tmp/$1.ext"
    openssl x509 -req -in "$tmp/$1.csr" -CA ca.pem -CAkey "$tmp/ca.key" \
        -CAcreateserial -CAserial "$tmp/ca.srl" -days $days \
        -extfile "$tmp/$1.ext" -out "$1.pem" 2>/dev/null
}
server_ext='basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth'
leaf localhost "/CN=localhost" "$server_ext
subjectAltName=DNS:localhost,IP:127.0.0.1"
leaf alt "/CN=alt.evpy.test" "$server_ext
subjectAltName=DNS:alt.evpy.test"
leaf client "/CN=evpy test client" 'basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth'

key selfsigned.key
openssl req -x509 -new -key selfsigned.key -days $days -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -out selfsigned.pem
