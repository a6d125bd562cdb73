#!/usr/bin/env bash
# Settings for a host that runs the engine and nothing else (bare metal or a VM), for an
# exam peak of tens of thousands of students. Prints them; with --apply, sets them now
# and keeps them across reboots (/etc/sysctl.d/60-engine.conf,
# /etc/security/limits.d/60-engine.conf). Root is needed for --apply.
#
#   tools/tune-host.sh            # print what would be set
#   tools/tune-host.sh --apply    # set it
#
# `engine check --host -c lb.toml` checks a host against a given configuration.
set -euo pipefail

apply=0
[ "${1:-}" = "--apply" ] && apply=1

# Each line: sysctl key, value, why.
settings=(
  # The accept queue of each listener: the engine asks for 1024; the kernel caps it at
  # somaxconn. At exam start thousands of students connect in the same second.
  "net.core.somaxconn 4096 listen backlog: the kernel caps each listener's queue at this"
  # SYNs waiting for the handshake to finish, per listener, during a connection storm.
  "net.ipv4.tcp_max_syn_backlog 8192 half-open connections queued during a connection storm"
  # Source ports for the engine's connections to the Moodle nodes: one per connection
  # to each node (at worst all to one node), TIME_WAIT included.
  "net.ipv4.ip_local_port_range 1024_65535 source ports for the connections to the Moodle nodes"
  # Reuse a TIME_WAIT source port for a new outgoing connection when it is safe.
  "net.ipv4.tcp_tw_reuse 1 reuse TIME_WAIT ports for new connections to the nodes"
  # Descriptors the whole host may open: two per client connection, with room to spare.
  "fs.file-max 2097152 descriptors for the whole host"
  # Packets the kernel queues per core before the stack takes them (bursts of small
  # requests on a busy NIC).
  "net.core.netdev_max_backlog 16384 packets queued per core before the TCP stack"
  # Keep-alive probes on idle connections stop being sent to vanished clients sooner.
  "net.ipv4.tcp_keepalive_time 600 seconds before keep-alive probes on an idle connection"
  # A keepalived pair (tools/keepalived): the standby engine listens on the virtual
  # address before it holds it, so that it serves the moment the address moves.
  "net.ipv4.ip_nonlocal_bind 1 the standby of a pair listens on the virtual address it does not hold yet"
)

# The engine's own descriptor limit: the systemd unit's LimitNOFILE (tools/systemd)
# sets it for the service; this is for a shell that starts it by hand.
nofile=1048576

conf=""
for s in "${settings[@]}"; do
  read -r key value why <<<"$s"
  value=${value//_/ }
  conf+="# ${why}"$'\n'"${key} = ${value}"$'\n'
  if [ "$apply" = 1 ]; then
    sysctl -q -w "${key}=${value}"
  else
    echo "sysctl -w ${key}=\"${value}\"    # ${why}"
  fi
done
# Locked memory: io_uring rings count against it on kernels before 5.12 (later ones
# charge the memory cgroup instead); 64 MiB holds a ring per core with room.
memlock=65536
limits="engine soft nofile ${nofile}"$'\n'"engine hard nofile ${nofile}"$'\n'"root soft nofile ${nofile}"$'\n'"root hard nofile ${nofile}"
limits+=$'\n'"engine soft memlock ${memlock}"$'\n'"engine hard memlock ${memlock}"

if [ "$apply" = 1 ]; then
  printf '%s' "$conf" >/etc/sysctl.d/60-engine.conf
  printf '%s\n' "$limits" >/etc/security/limits.d/60-engine.conf
  echo "tune-host.sh: applied; kept in /etc/sysctl.d/60-engine.conf and /etc/security/limits.d/60-engine.conf"
else
  echo "# /etc/security/limits.d/60-engine.conf (descriptor limit for a shell-started engine):"
  printf '%s\n' "$limits" | sed 's/^/#   /'
  echo "# run with --apply to set all of this (root)"
fi
