#!/usr/bin/env bash
# The README's "run it" command: a throw-away sandbox behind egret, on the repository's
# defaults (examples/demo-policy.toml, the example handlers). Shows a request whose credential
# egret injects (the sandbox never holds it), one that egret denies, and the audit trail.
# Everything it creates (namespaces, processes, files) is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $(id -u) -ne 0 ]]; then echo "run as root: sudo scripts/demo.sh" >&2; exit 1; fi
scripts/setup.sh >/dev/null
if [[ -x scripts/build-handlers.sh ]]; then scripts/build-handlers.sh >/dev/null; fi
echo "demo: building egret (first build takes a few minutes) ..."
cargo build -q --bins
BIN=$PWD/target/debug
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
X="ip netns exec"
for n in $SBX $EGR $UP; do ip netns add "$n"; ip -n "$n" link set lo up; done
ip link add dv$id netns $EGR type veth peer name du$id netns $UP
ip -n $EGR addr add 10.200.0.1/24 dev dv$id; ip -n $EGR link set dv$id up
ip -n $UP addr add 10.200.0.2/24 dev du$id;  ip -n $UP addr add 10.200.0.3/24 dev du$id; ip -n $UP link set du$id up

$X $UP "$BIN/egret-testsrv" --http '[::]:80' --log "$TMP/upstream.log" --name api.demo.test --ready-file "$TMP/up.ready" &
pids+=($!)
export DEMO_API_TOKEN="demo-token-$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')"
$X $EGR "$BIN/egret" run --netns $SBX --sandbox-id demo-agent \
  --policy examples/demo-policy.toml --ready-file "$TMP/egret.ready" --ca-out "$TMP/ca.pem" \
  --audit-log "$TMP/audit.jsonl" \
  2> "$TMP/egret.log" &
pids+=($!)
for _ in $(seq 200); do [[ -f $TMP/egret.ready && -f $TMP/up.ready ]] && break; sleep 0.05; done
[[ -f $TMP/egret.ready ]] || { cat "$TMP/egret.log"; exit 1; }

echo
echo "== inside the sandbox: curl http://api.demo.test/echo  (the sandbox has no token)"
$X $SBX curl -sS http://api.demo.test/echo | python3 -c '
import json, os, sys
d = json.load(sys.stdin); h = d["headers"]
print("upstream saw host:           ", d["host"])
print("upstream saw x-egret-handler:", h.get("x-egret-handler", "<none>"))
auth = h.get("authorization", "")
print("upstream saw authorization:  ", "Bearer <token egret injected: %s>" % ("matches DEMO_API_TOKEN" if auth == "Bearer " + os.environ["DEMO_API_TOKEN"] else "MISSING"))'
echo
echo "== inside the sandbox: curl http://exfil.demo.test/  (not allowed by the policy)"
$X $SBX curl -sS -i --resolve exfil.demo.test:80:10.200.0.3 http://exfil.demo.test/ | sed -n '1p;$p'
echo
echo "== egret's audit events"
sleep 0.2   # events are written when each response body has been sent
python3 - "$TMP/audit.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    e = json.loads(line)
    print("  {decision:8} {status} {method} {host}{path}  rule: {rule}  handler: {handler}".format(
        **{k: ("-" if e.get(k) is None else e[k]) for k in ("decision", "status", "method", "host", "path", "rule", "handler")}))
PY
echo
echo "demo: done (namespaces, processes and files are being removed)"
