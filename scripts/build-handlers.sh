#!/usr/bin/env bash
# Builds the WebAssembly handlers (handlers-wasm/, its own cargo workspace)
# for wasm32-wasip2 and copies every component to handlers-wasm/dist/ with the
# crate's name (inject-header.wasm, ...). The egret-wasm tests and the demo call
# this; the .wasm files are build outputs and are not committed.
#
# Idempotent: cargo rebuilds only what changed, and a component is copied only
# when its bytes differ, so a second run takes about a second.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ws="$root/handlers-wasm"
target=wasm32-wasip2
dist="$ws/dist"

if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
    echo "build-handlers: installing rust target $target" >&2
    rustup target add "$target" >&2
fi

# CARGO_TARGET_DIR from the caller (e.g. the host-side test build) must not
# redirect the guest build: the copy step below reads handlers-wasm/target.
export CARGO_TARGET_DIR="$ws/target"
cargo build --quiet --release --target "$target" --manifest-path "$ws/Cargo.toml" --workspace >&2

mkdir -p "$dist"
out="$ws/target/$target/release"
count=0
for member in $(cd "$ws" && ls -d */Cargo.toml test-handlers/*/Cargo.toml); do
    crate_dir="$(dirname "$member")"
    name="$(basename "$crate_dir")"
    [ "$name" = "egret-handler" ] && continue
    src="$out/${name//-/_}.wasm"
    if [ ! -f "$src" ]; then
        echo "build-handlers: expected $src after the build" >&2
        exit 1
    fi
    if ! cmp -s "$src" "$dist/$name.wasm"; then
        # Copy then rename so a concurrent reader never sees a partial file.
        cp "$src" "$dist/.$name.wasm.tmp"
        mv -f "$dist/.$name.wasm.tmp" "$dist/$name.wasm"
    fi
    count=$((count + 1))
done

echo "build-handlers: $count components in ${dist#"$root"/}:"
(cd "$dist" && for f in *.wasm; do printf '  %8d  %s\n' "$(stat -c %s "$f")" "$f"; done)

# The TypeScript examples against the SDK's types (handlers-wasm/ts/tsconfig.json), about a
# second; tsc comes with componentize-js in egret's toolchain prefix (scripts/setup.sh). The
# components themselves are built from source by `egret handler build` in the e2e tests
# (tests/tests/e2e/languages.rs), which needs the egret binary.
toolchain="${EGRET_TOOLCHAIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/egret/toolchain}"
if [ -x "$toolchain/node_modules/.bin/tsc" ]; then
    "$toolchain/node_modules/.bin/tsc" -p "$ws/ts"
    echo "build-handlers: handlers-wasm/ts type-checks"
else
    echo "build-handlers: no tsc in $toolchain (scripts/setup.sh installs it): TypeScript examples not type-checked" >&2
fi
