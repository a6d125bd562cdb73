#!/usr/bin/env bash
# The one command: installs HAProxy, nginx and wrk if needed, builds the engine, the origins
# and the harness, then runs every scenario. Arguments go to engine-bench, e.g.
#   bash bench/run.sh --quick
#   bash bench/run.sh --scenarios get-ka-sticky,idle-10k --runs 5
set -euo pipefail
cd "$(dirname "$0")/.."
bash bench/install.sh
# the engine or the tools crate may not build yet: the harness reports that target as n/a
cargo build --release -p engine-bench
cargo build --release -p engine -p engine-tools ||
  echo "run.sh: the engine (or tools) did not build; the report will say n/a for it" >&2
# CARGO_TARGET_DIR, when set, is where cargo put the binaries (engine-bench finds the engine
# and bench-origin beside itself)
exec "${CARGO_TARGET_DIR:-target}/release/engine-bench" "$@"
