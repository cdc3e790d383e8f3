#!/usr/bin/env bash
# Installs Debian's rabbitmq-server (3.10 on bookworm, with the rabbitmq_amqp1_0 plugin) for the process
# backend, without leaving a system instance running: the harness starts private nodes itself (own node
# name, ports, mnesia dir, HOME and epmd under a temporary directory) and never uses /etc/rabbitmq.
#
# Called by .ci/run (as root). Idempotent.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

was_running=no
if pgrep -u rabbitmq -x beam.smp >/dev/null 2>&1; then
  was_running=yes
fi

if ! dpkg-query -W -f='${Status}' rabbitmq-server 2>/dev/null | grep -q "install ok installed"; then
  # Keep the package's maintainer scripts from starting the service: a policy-rc.d answering 101
  # ("action forbidden") for the duration of the install, unless one already exists.
  own_policy=no
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    own_policy=yes
  fi
  trap '[ "$own_policy" = yes ] && rm -f /usr/sbin/policy-rc.d' EXIT
  apt-get install -y -qq --no-install-recommends rabbitmq-server >/dev/null
fi

# If the install started a system instance anyway (systemd ignoring policy-rc.d), stop it: it would hold
# 5672/25672 and epmd's 4369. An instance that was running before this script is left alone.
if [ "$was_running" = no ] && pgrep -u rabbitmq -x beam.smp >/dev/null 2>&1; then
  echo "rabbitmq-install: the package started a system instance; stopping it"
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet rabbitmq-server 2>/dev/null; then
    systemctl stop rabbitmq-server
    systemctl disable rabbitmq-server >/dev/null 2>&1 || true
  else
    rabbitmqctl stop >/dev/null 2>&1 || true
  fi
fi

server=/usr/lib/rabbitmq/bin/rabbitmq-server
[ -x "$server" ] || { echo "rabbitmq-install: $server missing after install" >&2; exit 1; }
plugin=$(ls -d /usr/lib/rabbitmq/lib/rabbitmq_server-*/plugins/rabbitmq_amqp1_0-* 2>/dev/null | head -n1 || true)
[ -n "$plugin" ] || { echo "rabbitmq-install: plugin rabbitmq_amqp1_0 not shipped by this package" >&2; exit 1; }
echo "rabbitmq-install: rabbitmq-server $(dpkg-query -W -f='${Version}' rabbitmq-server), plugin $(basename "$plugin")"
