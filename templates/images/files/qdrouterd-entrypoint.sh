#!/bin/sh
# amqp1-rig: start qdrouterd in the foreground with the devstack-plugin-amqp1 address settings.
set -eu
conf=/etc/amqp1-rig/qdrouterd.conf
mkdir -p /etc/amqp1-rig /var/lib/qdrouterd /etc/sasl2
# a configuration rendered by the harness (templates/qdrouterd/, container placement) lists every
# scenario user in sasl-users (name:password per line)
mkdir -p /etc/amqp1-rig/sasl2
if [ -s /etc/amqp1-rig/sasl-users ]; then
  while IFS=: read -r user pass; do
    [ -n "$user" ] && printf '%s' "$pass" | saslpasswd2 -c -p -f /etc/amqp1-rig/sasl2/qdrouterd.sasldb "$user"
  done < /etc/amqp1-rig/sasl-users
  rm -f /etc/amqp1-rig/sasl-users
fi
auth=no
if [ -n "${QDROUTERD_USER:-}" ]; then
  auth=yes
  printf 'pwcheck_method: auxprop\nauxprop_plugin: sasldb\nsasldb_path: /var/lib/qdrouterd/qdrouterd.sasldb\nmech_list: PLAIN\nsql_select: dummy select\n' > /etc/sasl2/qdrouterd.conf
  printf '%s' "${QDROUTERD_PASSWORD:-}" | saslpasswd2 -c -p -f /var/lib/qdrouterd/qdrouterd.sasldb "$QDROUTERD_USER"
fi
if [ ! -s "$conf" ]; then
  {
    printf 'router {\n    mode: standalone\n    id: Router.A\n    workerThreads: 4\n    saslConfigPath: /etc/sasl2\n    saslConfigName: qdrouterd\n}\n'
    printf 'listener {\n    host: 0.0.0.0\n    port: 5672\n    role: normal\n    authenticatePeer: %s\n}\n' "$auth"
    for a in unicast:closest exclusive:closest broadcast:multicast \
             openstack.org/om/rpc/multicast:multicast openstack.org/om/rpc/unicast:closest \
             openstack.org/om/rpc/anycast:balanced openstack.org/om/notify/multicast:multicast \
             openstack.org/om/notify/unicast:closest openstack.org/om/notify/anycast:balanced; do
      printf 'address {\n    prefix: %s\n    distribution: %s\n}\n' "${a%%:*}" "${a##*:}"
    done
    printf 'log {\n    module: DEFAULT\n    enable: info+\n    output: stderr\n}\n'
  } > "$conf"
fi
exec qdrouterd --config "$conf" "$@"
