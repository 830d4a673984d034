#!/usr/bin/env bash
# The README's "run it" command: a throw-away sandbox behind egret, on the repository's
# defaults (examples/demo-policy.toml, the example handlers). Shows what egret is for: an HTTPS
# request from the sandbox, intercepted with the sandbox's own CA, gets a credential the sandbox
# never holds and goes on to a TLS upstream; an HTTPS connection to a host the policy does not
# allow is refused; the same for plain HTTP; and the audit trail of all of it.
# Everything it creates (namespaces, processes, files) is removed on exit, also on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $(id -u) -ne 0 ]]; then echo "run as root: sudo scripts/demo.sh" >&2; exit 1; fi
scripts/setup.sh --demo >/dev/null
scripts/build-handlers.sh >/dev/null
# EGRET_BIN_DIR: run the egret and egret-testsrv found there instead of building (the e2e test
# that runs this demo passes its own build's directory).
if [[ -n ${EGRET_BIN_DIR:-} ]]; then
  BIN=$EGRET_BIN_DIR
else
  echo "demo: building egret (first build takes a few minutes) ..."
  cargo build -q --bins
  BIN=$PWD/target/debug
fi
id=$$
SBX=egret-demo-$id-sbx EGR=egret-demo-$id-egr UP=egret-demo-$id-up
TMP=$(mktemp -d /tmp/egret-demo.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for n in $SBX $EGR $UP; do ip netns del "$n" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM   # through the EXIT trap: clean up when interrupted too
X="ip netns exec"
for n in $SBX $EGR $UP; do ip netns add "$n"; ip -n "$n" link set lo up; done
ip link add dv$id netns $EGR type veth peer name du$id netns $UP
ip -n $EGR addr add 10.200.0.1/24 dev dv$id; ip -n $EGR link set dv$id up
ip -n $UP addr add 10.200.0.2/24 dev du$id;  ip -n $UP addr add 10.200.0.3/24 dev du$id; ip -n $UP link set du$id up

wait_for() {  # FILE LOG: wait until a process has written its ready file
  for _ in $(seq 200); do [[ -f $1 ]] && return; sleep 0.05; done
  cat "$2" >&2; exit 1
}
# The upstream: HTTP on 80, TLS on 443 with a leaf for api.demo.test from a throw-away CA that
# it writes to $TMP/api.demo.test-ca.pem (egret verifies upstreams against it).
$X $UP "$BIN/egret-testsrv" --http '[::]:80' --https '[::]:443' --pki-dir "$TMP" \
  --log "$TMP/upstream.log" --name api.demo.test --ready-file "$TMP/up.ready" 2> "$TMP/up.err" &
pids+=($!)
wait_for "$TMP/up.ready" "$TMP/up.err"
export DEMO_API_TOKEN="demo-token-$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')"
$X $EGR "$BIN/egret" run --netns $SBX --sandbox-id demo-agent \
  --policy examples/demo-policy.toml --upstream-ca "$TMP/api.demo.test-ca.pem" \
  --ca-out "$TMP/ca.pem" --ready-file "$TMP/egret.ready" --audit-log "$TMP/audit.jsonl" \
  2> "$TMP/egret.log" &
pids+=($!)
wait_for "$TMP/egret.ready" "$TMP/egret.log"

sbx_curl() {  # curl in the sandbox, trusting only egret's sandbox CA; stderr in $TMP/curl.err
  $X $SBX curl -sS --cacert "$TMP/ca.pem" "$@" 2> "$TMP/curl.err"
}
saw() {  # what the upstream's /echo (JSON on stdin) says it received
  # The echo carries each header's sha256 besides its value: egret masks the token in the
  # echoed value on its way back (the sandbox never reads a credential, not even echoed), so
  # the hash is what shows the upstream got the token.
  python3 -c '
import hashlib, json, os, sys
d = json.load(sys.stdin)
want = "Bearer " + os.environ["DEMO_API_TOKEN"]
ok = d.get("headers_sha256", {}).get("authorization") == hashlib.sha256(want.encode()).hexdigest()
print("  upstream saw: host %s, tls %s, %s" % (d["host"], str(d["tls"]).lower(), d["version"]))
print("  upstream saw: authorization: Bearer <%s>" % ("the token egret injected: matches DEMO_API_TOKEN" if ok else "MISSING"))
print("  the sandbox reads the echoed header as: %s" % d["headers"].get("authorization", "(none)"))
sys.exit(0 if ok else 1)'
}

echo
echo "== in the sandbox: curl --cacert ca.pem https://api.demo.test/echo  (the sandbox has no token)"
sbx_curl -v -o "$TMP/echo.json" https://api.demo.test/echo || { cat "$TMP/curl.err"; exit 1; }
sed -n 's/^\* *\(subject\|issuer\): /  certificate the sandbox got, \1: /p' "$TMP/curl.err"
saw < "$TMP/echo.json"

echo
echo "== in the sandbox: curl https://exfil.demo.test/  (not allowed by the policy; egret's DNS"
echo "   answers NXDOMAIN for it, so the sandbox dials the address itself: --resolve)"
if sbx_curl --resolve exfil.demo.test:443:10.200.0.3 https://exfil.demo.test/; then
  echo "demo: exfil.demo.test answered, egret should have refused it" >&2; exit 1
fi
echo "  $(cat "$TMP/curl.err")"
echo "  (egret read the ClientHello, found SNI exfil.demo.test denied and reset the connection:"
echo "   no certificate was minted and nothing reached the upstream)"

echo
echo "== the same over plain HTTP"
echo "   curl http://api.demo.test/echo"
sbx_curl -o "$TMP/echo.json" http://api.demo.test/echo || { cat "$TMP/curl.err"; exit 1; }
saw < "$TMP/echo.json"
echo "   curl http://exfil.demo.test/"
sbx_curl -i --resolve exfil.demo.test:80:10.200.0.3 http://exfil.demo.test/ | sed -n '1{s/\r//;s/^/  /;p};$s/^/  /p'

echo
echo "== the upstream's access log: every request that reached it"
sed 's/^/  /' "$TMP/upstream.log"

echo
echo "== egret's audit events"
sleep 0.2   # events are written when each response body has been sent
python3 - "$TMP/audit.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    e = {k: ("-" if v is None else v) for k, v in json.loads(line).items()}
    print("  {decision:7} {proto:8} {status:>3} {host} {method} {path}  rule: {rule}  handler: {handler}".format(**e))
PY
echo
echo "demo: done (namespaces, processes and files are being removed)"
