#!/bin/sh
# amqp1-rig: start RabbitMQ in the foreground, logs on stdout, one user from the environment.
set -eu
conf=/etc/rabbitmq/rabbitmq.conf
if [ -s /etc/amqp1-rig/rabbitmq.conf ]; then
  # a configuration rendered by the harness (templates/rabbitmq/); inside the container the listener is
  # always 5672, logs go to the console, and the broker is reachable only through the host's 127.0.0.1
  # port, so loopback-only users are lifted
  grep -Ev '^[[:space:]]*(listeners\.tcp\.|log\.|loopback_users)' /etc/amqp1-rig/rabbitmq.conf > "$conf"
  echo "loopback_users = none" >> "$conf"
  chown -R rabbitmq:rabbitmq /etc/amqp1-rig
else
  {
    echo "default_user = ${RABBITMQ_USER:-guest}"
    echo "default_pass = ${RABBITMQ_PASS:-guest}"
    echo "loopback_users = none"
  } > "$conf"
fi
{
  echo "listeners.tcp.default = 5672"
  echo "log.console = true"
  echo "log.console.level = info"
  echo "log.file = false"
} >> "$conf"
chown rabbitmq:rabbitmq "$conf"
chmod 640 "$conf"
mkdir -p /var/lib/rabbitmq /var/log/rabbitmq
chown -R rabbitmq:rabbitmq /var/lib/rabbitmq /var/log/rabbitmq
cd /var/lib/rabbitmq
# setpriv execs (runuser would stay as PID 1, answer SIGTERM with a 2 s wait and then SIGKILL RabbitMQ):
# RabbitMQ's start script is PID 1 and turns SIGTERM into a clean shutdown of the node.
exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups /usr/lib/rabbitmq/bin/rabbitmq-server "$@"
