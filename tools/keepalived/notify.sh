#!/usr/bin/env bash
# keepalived's notify hook: called with TYPE NAME STATE (e.g. INSTANCE moodle MASTER).
# Logs the change; a site adds its own (a page to the on-call, a metric).
# Optionally appends to $ENGINE_NOTIFY_LOG (the pair test reads it).
set -u
type=${1:-} name=${2:-} state=${3:-}
msg="keepalived: $type $name is now $state on $(hostname)"
logger -t engine-pair "$msg" 2>/dev/null || true
if [ -n "${ENGINE_NOTIFY_LOG:-}" ]; then
  echo "$(date +%s.%N) $state" >>"$ENGINE_NOTIFY_LOG"
fi
exit 0
