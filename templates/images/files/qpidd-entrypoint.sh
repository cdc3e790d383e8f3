#!/bin/sh
# amqp1-rig: start qpidd in the foreground with the oslo.messaging AMQP 1.0 settings, logs on stderr.
set -eu
conf=/etc/amqp1-rig/qpidd.conf
mkdir -p /etc/amqp1-rig /var/lib/qpidd/data /etc/sasl2
# a configuration rendered by the harness (templates/qpidd/, container placement) keeps its data under
# /etc/amqp1-rig and lists every scenario user in sasl-users (name:password per line)
mkdir -p /etc/amqp1-rig/data /etc/amqp1-rig/run /etc/amqp1-rig/sasl2
if [ -s /etc/amqp1-rig/sasl-users ]; then
  while IFS=: read -r user pass; do
    [ -n "$user" ] && printf '%s' "$pass" | saslpasswd2 -c -p -f /etc/amqp1-rig/sasl2/qpidd.sasldb -u QPID "$user"
  done < /etc/amqp1-rig/sasl-users
  rm -f /etc/amqp1-rig/sasl-users
fi
if [ ! -s "$conf" ]; then
  {
    echo "queue-patterns=exclusive"
    echo "queue-patterns=unicast"
    echo "topic-patterns=broadcast"
    echo "max-connections=0"
    echo "data-dir=/var/lib/qpidd/data"
    if [ -n "${QPIDD_USER:-}" ]; then echo "auth=yes"; echo "sasl-config=/etc/sasl2"; else echo "auth=no"; fi
  } > "$conf"
fi
if [ -n "${QPIDD_USER:-}" ]; then
  printf 'pwcheck_method: auxprop\nauxprop_plugin: sasldb\nsasldb_path: /var/lib/qpidd/qpidd.sasldb\nmech_list: PLAIN ANONYMOUS\nsql_select: dummy select\n' > /etc/sasl2/qpidd.conf
  printf '%s' "${QPIDD_PASSWORD:-}" | saslpasswd2 -c -p -f /var/lib/qpidd/qpidd.sasldb -u QPID "$QPIDD_USER"
fi
exec qpidd --config "$conf" --port 5672 --log-to-stderr yes --log-enable info+ "$@"
