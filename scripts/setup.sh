#!/usr/bin/env bash
# Install what egret needs on a fresh Debian machine (as root).
#   scripts/setup.sh          everything the tests and benchmarks use (scripts/test.sh runs this)
#   scripts/setup.sh --demo   only what scripts/demo.sh uses: nftables, iproute2, curl, python3
#                             and the wasm32-wasip2 target (so the demo's cold path is the build)
# podman and runc run the containers of tests/tests/e2e/oci.rs (egret attached by its OCI hook).
# Idempotent: safe to run again; skips what is already there.
set -euo pipefail
case "${1:-}" in
  "") mode=all ;;
  --demo) mode=demo ;;
  *) echo "setup: unknown argument '$1' (use --demo for the demo's needs only, or nothing)" >&2; exit 2 ;;
esac
pairs="nft:nftables ip:iproute2 curl:curl python3:python3"
if [[ $mode == all ]]; then
  pairs+=" dig:dnsutils setpriv:util-linux sha256sum:coreutils nsenter:util-linux podman:podman runc:runc node:nodejs npm:npm git:git pip3:python3-pip unshare:util-linux strace:strace"
fi
need=()
for pair in $pairs; do
  cmd=${pair%%:*}; pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || need+=("$pkg")
done
# egret loads its nft ruleset through libnftables in-process (dlopen of libnftables.so.1).
ldconfig -p | grep 'libnftables\.so\.1 ' >/dev/null || need+=(libnftables1)
if ((${#need[@]})); then
  echo "setup: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
add_wasm_target() {
  if ! rustup target list --installed 2>/dev/null | grep -q '^wasm32-wasip2$'; then
    echo "setup: adding the wasm32-wasip2 target"
    rustup target add wasm32-wasip2
  fi
}
if [[ $mode == demo ]]; then
  add_wasm_target
  echo "setup: ok (demo)"
  exit 0
fi
# grpcio: the real gRPC client and server of tests/tests/e2e/protocols/grpc.rs and
# scripts/bench-proto.sh.
if ! python3 -c 'import grpc' >/dev/null 2>&1; then
  echo "setup: installing python grpcio"
  # (Debian's own python3 refuses pip without --break-system-packages: PEP 668)
  export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
  python3 -m pip install -q grpcio || python3 -m pip install -q --break-system-packages grpcio || true
  python3 -c 'import grpc' || { echo "setup: python3 -m pip install grpcio failed" >&2; exit 1; }
fi
# The MCP SDKs of tests/tests/e2e/mcp.rs: the Python `mcp` package (FastMCP servers and its
# client; 1.x, where FastMCP and the HTTP+SSE transport live) and the TypeScript
# @modelcontextprotocol/sdk client, in its own npm prefix outside the repository.
if [[ "$(python3 -c 'import importlib.metadata as m; print(m.version("mcp"))' 2>/dev/null)" != "1.30.0" ]]; then
  echo "setup: installing python mcp 1.30.0"
  export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
  python3 -m pip install -q mcp==1.30.0 || python3 -m pip install -q --break-system-packages mcp==1.30.0
fi
mcp_sdk="${XDG_CACHE_HOME:-$HOME/.cache}/egret/mcp-sdk"
if ! grep -qs '"version": "1.32.2"' "$mcp_sdk/node_modules/@modelcontextprotocol/sdk/package.json"; then
  echo "setup: installing @modelcontextprotocol/sdk 1.32.2 in $mcp_sdk"
  mkdir -p "$mcp_sdk"
  npm install --prefix "$mcp_sdk" --no-audit --no-fund --loglevel=error @modelcontextprotocol/sdk@1.32.2
fi
# The JavaScript/TypeScript and Python handler toolchains `egret handler build` runs (the e2e
# tests build the examples in handlers-wasm/ts and handlers-wasm/py from source). The npm
# packages go to egret's default toolchain prefix, outside the repository; npm and pip keep
# their download caches (~/.npm, ~/.cache/pip), so a second machine setup downloads nothing.
if ! command -v componentize-py >/dev/null 2>&1 || [[ "$(componentize-py --version 2>/dev/null)" != "componentize-py 0.25.1" ]]; then
  echo "setup: installing componentize-py 0.25.1"
  export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
  python3 -m pip install -q componentize-py==0.25.1 || python3 -m pip install -q --break-system-packages componentize-py==0.25.1
fi
toolchain="${EGRET_TOOLCHAIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/egret/toolchain}"
if ! grep -qs '"version": "0.23.0"' "$toolchain/node_modules/@bytecodealliance/componentize-js/package.json" \
   || ! grep -qs '"version": "0.25.0"' "$toolchain/node_modules/esbuild/package.json" \
   || ! grep -qs '"version": "7.0.2"' "$toolchain/node_modules/typescript/package.json"; then
  # typescript: only scripts/build-handlers.sh's type check of handlers-wasm/ts needs it.
  echo "setup: installing componentize-js 0.23.0, esbuild 0.25.0 and typescript 7.0.2 in $toolchain"
  mkdir -p "$toolchain"
  npm install --prefix "$toolchain" --no-audit --no-fund --loglevel=error \
    @bytecodealliance/componentize-js@0.23.0 esbuild@0.25.0 typescript@7.0.2
fi
add_wasm_target
if ! cargo fmt --version >/dev/null 2>&1; then
  echo "setup: adding rustfmt (scripts/test.sh checks formatting)"
  rustup component add rustfmt
fi
# --- docker.io and containerd (tests/tests/e2e/runtime_shim.rs: egret runc under dockerd and
# ctr). The tests start their own daemons (own data root, sockets, network namespace), so the
# packages' system services must not start: policy-rc.d refuses them during the install, and any
# that started anyway (no policy-rc.d honoured) are stopped. /usr/local/bin/docker may be some
# other docker CLI: the tests call /usr/bin/docker, the package's.
if [[ ! -x /usr/sbin/dockerd || ! -x /usr/bin/docker || ! -x /usr/bin/containerd || ! -x /usr/bin/ctr ]]; then
  echo "setup: installing docker.io and containerd (their services are not started)"
  rc=/usr/sbin/policy-rc.d own_rc=
  [[ -e $rc ]] || { printf '#!/bin/sh\nexit 101\n' >"$rc" && chmod +x "$rc" && own_rc=1; }
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends docker.io containerd >/dev/null
  [[ -z $own_rc ]] || rm -f "$rc"
  if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
    systemctl disable --now docker.socket docker.service containerd.service >/dev/null 2>&1 || true
  fi
fi
# --- end docker.io and containerd
# The ordinary user `egret exec`'s end-to-end tests run as (tests/tests/e2e/exec.rs): egret
# exec must work without root.
if ! id egret-test >/dev/null 2>&1; then
  echo "setup: creating the unprivileged user egret-test"
  useradd --system --create-home --home-dir /var/lib/egret-test --shell /bin/sh egret-test
fi
echo "setup: ok"
