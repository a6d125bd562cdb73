#!/usr/bin/env bash
# Profiles the engine in the main scenario (get-ka-sticky): perf record -g while wrk runs,
# then valgrind callgrind under a lighter load; the top functions go to
# bench/results/<date>/profile.txt. Arguments go to `engine-bench profile`, e.g.
#   bash bench/profile.sh --tool perf --duration 15
#   bash bench/profile.sh --target haproxy        # the same for a reference proxy
# Record before and after a change by copying profile.txt aside (or --out DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
bash bench/install.sh
cargo build --release -p engine -p engine-bench
exec target/release/engine-bench profile "$@"
