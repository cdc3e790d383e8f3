//! Process backend: runs real broker binaries (qpidd, qdrouterd, rabbitmq-server, artemis) as local processes.
