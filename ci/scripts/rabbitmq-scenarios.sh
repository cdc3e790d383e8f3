#!/usr/bin/env bash
# Runs the RabbitMQ scenarios on real RabbitMQ (Debian's 3.10) through the process backend and checks that
# no private broker node is left behind afterwards. Expects rabbitmq-install.sh to have run.
# Usage: ci/scripts/rabbitmq-scenarios.sh [scenario.yaml ...]
set -euo pipefail
cd "$(dirname "$0")/../.."

scenarios=("$@")
if [ ${#scenarios[@]} -eq 0 ]; then
  # rpc needs the named reply queue on RabbitMQ 3.x: the variant under scenarios/rabbitmq/.
  scenarios=(scenarios/rabbitmq/rpc.yaml scenarios/notify.yaml scenarios/compat/rabbitmq-dynamic-reply.yaml)
fi

# Known failures are keyed by flavour (rabbitmq3 / rabbitmq4): name the installed major version.
ver=$(ls -d /usr/lib/rabbitmq/lib/rabbitmq_server-* 2>/dev/null | sed 's/.*rabbitmq_server-//' | sort -V | tail -n1)
if [ -z "$ver" ]; then
  echo "rabbitmq-server is not installed (run ci/scripts/rabbitmq-install.sh)" >&2
  exit 1
fi
broker="rabbitmq:rabbitmq${ver%%.*}"
echo "RabbitMQ $ver -> --broker $broker"

status=0
for s in "${scenarios[@]}"; do
  echo "--- $s (process backend, $broker)"
  start=$(date +%s)
  if cargo run -q -p harness -- run --backend process --broker "$broker" "$s"; then
    echo "--- $s: ok in $(( $(date +%s) - start )) s"
  else
    echo "--- $s: FAILED in $(( $(date +%s) - start )) s"
    status=1
  fi
done

# Private nodes are named rig-<id>-<n>@localhost; none may survive the harness.
if pgrep -f 'rig-[0-9a-f]{8}-[0-9]+@localhost' >/dev/null 2>&1; then
  echo "leftover private RabbitMQ nodes:" >&2
  pgrep -af 'rig-[0-9a-f]{8}-[0-9]+@localhost' >&2 || true
  status=1
fi
exit $status
