#!/usr/bin/env bash
# The test command (README): installs what the end-to-end tests drive (curl, openssl,
# PHP, Chromium, keepalived, systemd-analyze, nghttp, Python's prometheus_client and h2)
# from the package registries, builds the release binary the tests run, then runs every
# test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v curl >/dev/null || need+=(curl)
command -v openssl >/dev/null || need+=(openssl)
command -v php >/dev/null || need+=(php-cli)
command -v chromium >/dev/null || need+=(chromium)
command -v ss >/dev/null || need+=(iproute2)
command -v keepalived >/dev/null || need+=(keepalived)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v nghttp >/dev/null || need+=(nghttp2-client)
if [ ${#need[@]} -gt 0 ]; then
  echo "tests/run.sh: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
python3 -c 'import prometheus_client' 2>/dev/null || python3 -m pip install -q prometheus_client
python3 -c 'import h2, hpack' 2>/dev/null || python3 -m pip install -q h2

cargo build --release -p engine -p engine-tools
cargo test --workspace --no-fail-fast -- --test-threads=2
