#!/usr/bin/env bash
# Installs what the bench harness drives: HAProxy, nginx, wrk, h2load (nghttp2-client; the
# HTTP/2 scenarios) (Debian packages), and the profilers (linux-perf, valgrind; optional).
# Idempotent: does nothing when all are present.
set -u
need=()
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v h2load >/dev/null 2>&1 || need+=(nghttp2-client)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v valgrind >/dev/null 2>&1 || need+=(valgrind)
optional=()
command -v perf >/dev/null 2>&1 || optional+=(linux-perf)

if [ ${#need[@]} -eq 0 ] && [ ${#optional[@]} -eq 0 ]; then
  echo "install.sh: haproxy, nginx, wrk, h2load, openssl, valgrind and perf are already installed"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
stamp=/var/lib/apt/periodic/engine-bench-update-stamp
# apt-get update once (per day at most)
if [ ! -f "$stamp" ] || [ -n "$(find "$stamp" -mmin +1440 2>/dev/null)" ]; then
  $SUDO apt-get update -qq && $SUDO mkdir -p "$(dirname "$stamp")" && $SUDO touch "$stamp"
fi
if [ ${#need[@]} -gt 0 ]; then
  # nginx-light is gone from newer Debian releases: fall back to nginx.
  if ! $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"; then
    need=("${need[@]/nginx-light/nginx}")
    $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" || {
      echo "install.sh: could not install: ${need[*]}" >&2
      exit 1
    }
  fi
fi
for p in "${optional[@]}"; do
  $SUDO apt-get install -y -qq --no-install-recommends "$p" ||
    echo "install.sh: optional $p not available; profile.sh will use callgrind only" >&2
done
# The packages start system services on ports 80: the bench runs its own instances.
for svc in haproxy nginx; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
    $SUDO systemctl stop "$svc" || true
    $SUDO systemctl disable "$svc" >/dev/null 2>&1 || true
  fi
done
for svc in haproxy nginx; do
  if [ -x "/etc/init.d/$svc" ]; then $SUDO "/etc/init.d/$svc" stop >/dev/null 2>&1 || true; fi
done
echo "install.sh: done"
for c in haproxy nginx wrk h2load perf valgrind; do printf '  %-9s %s\n' "$c" "$(command -v $c || echo missing)"; done
