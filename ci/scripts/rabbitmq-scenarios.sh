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

status=0
for s in "${scenarios[@]}"; do
  echo "--- $s (process backend, rabbitmq)"
  start=$(date +%s)
  if cargo run -q -p harness -- run --backend process --broker rabbitmq "$s"; then
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
