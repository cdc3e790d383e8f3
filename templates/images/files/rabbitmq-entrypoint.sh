#!/bin/sh
# amqp1-rig: start RabbitMQ in the foreground, logs on stdout, one user from the environment.
set -eu
conf=/etc/rabbitmq/rabbitmq.conf
if [ -s /etc/amqp1-rig/rabbitmq.conf ]; then
  # a configuration rendered by the harness; the listener inside the container is always 5672
  grep -v '^[[:space:]]*listeners\.tcp\.' /etc/amqp1-rig/rabbitmq.conf > "$conf"
else
  {
    echo "default_user = ${RABBITMQ_USER:-guest}"
    echo "default_pass = ${RABBITMQ_PASS:-guest}"
    echo "loopback_users = none"
  } > "$conf"
fi
echo "listeners.tcp.default = 5672" >> "$conf"
chown rabbitmq:rabbitmq "$conf"
chmod 640 "$conf"
mkdir -p /var/lib/rabbitmq /var/log/rabbitmq
chown -R rabbitmq:rabbitmq /var/lib/rabbitmq /var/log/rabbitmq
cd /var/lib/rabbitmq
exec runuser -u rabbitmq -- /usr/lib/rabbitmq/bin/rabbitmq-server "$@"
