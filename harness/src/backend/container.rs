//! Container backend: runs brokers in docker containers built from `templates/images/`.
