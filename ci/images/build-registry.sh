#!/usr/bin/env bash
# Builds one broker image from templates/images/*.Dockerfile.tera on a machine that can pull base
# images from a registry (GitHub Actions, a developer machine). Offline machines use build-offline.sh.
#
# Usage: ci/images/build-registry.sh NAME [--var KEY=VALUE ...]
#   NAME: qpidd-ubuntu-focal | qpidd-centos7 | qpidd-opensuse-leap15 | qpidd-source-debian |
#         qdrouterd-source | rabbitmq-3.13 | rabbitmq-4 | artemis
# Download mirrors are never built in; pass them:
#   qpidd-centos7:        --var centos_vault_mirror=URL --var epel_archive_mirror=URL
#   qpidd-source-debian,
#   qdrouterd-source:     --var apache_archive=URL
# Environment: HARNESS (default: cargo run -q -p harness --), AMQP1_RIG_IMAGE (override the tag)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
name="${1:?usage: $0 NAME [--var KEY=VALUE ...]}"; shift
harness="${HARNESS:-cargo run -q -p harness --}"

# name -> template, version, base image, local image, build files
case "$name" in
  qpidd-ubuntu-focal)    t=qpidd-ubuntu-focal;    v=1.39.0; base=ubuntu:20.04;        img=amqp1-rig/qpidd:ubuntu-focal;    files=qpidd-entrypoint.sh ;;
  qpidd-centos7)         t=qpidd-centos7;         v=1.39.0; base=centos:7;            img=amqp1-rig/qpidd:centos7;         files=qpidd-entrypoint.sh ;;
  qpidd-opensuse-leap15) t=qpidd-opensuse-leap15; v=1.37.0; base=opensuse/leap:15.6;  img=amqp1-rig/qpidd:opensuse-leap15; files=qpidd-entrypoint.sh ;;
  qpidd-source-debian)   t=qpidd-source-debian;   v=1.39.0; base=debian:bookworm;     img=amqp1-rig/qpidd:source-1.39.0;   files=qpidd-entrypoint.sh ;;
  qdrouterd-source)      t=qdrouterd-source;      v=1.19.0; base=debian:bookworm;     img=amqp1-rig/qdrouterd:1.19.0;      files=qdrouterd-entrypoint.sh ;;
  rabbitmq-3.13)         t=rabbitmq-official;     v=3.13;   base=rabbitmq:3.13-management; img=amqp1-rig/rabbitmq:3.13;   files= ;;
  rabbitmq-4)            t=rabbitmq-official;     v=4.2;    base=rabbitmq:4.2-management;  img=amqp1-rig/rabbitmq:4.2;    files= ;;
  artemis)               t=artemis;               v=2.37.0; base=apache/activemq-artemis:2.37.0-alpine; img=amqp1-rig/artemis:2.37.0; files= ;;
  *) echo "unknown image '$name' (see --help in the header of $0)" >&2; exit 2 ;;
esac
img="${AMQP1_RIG_IMAGE:-$img}"
ctx="$(mktemp -d)"; trap 'rm -rf "$ctx"' EXIT
# the variables the container backend's image context provides, then the caller's
$harness render "images/$t.Dockerfile.tera" --var "version=$v" --var "base_image=$base" \
  --var "image_name=$img" --var "amqp_port=5672" --var "ppa=qpid/released" "$@" >"$ctx/Dockerfile"
for f in $files; do cp "$root/templates/images/files/$f" "$ctx/"; done
t0=$(date +%s)
docker build -t "$img" "$ctx"
echo "[build-registry] $img built in $(( $(date +%s) - t0 )) s" >&2
