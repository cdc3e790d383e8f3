#!/usr/bin/env bash
# Builds one broker image from templates/images/*.Dockerfile.tera on a machine that can pull base
# images from a registry (GitHub Actions, a developer machine). Offline machines use build-offline.sh.
#
# Usage: ci/images/build-registry.sh NAME [--var KEY=VALUE ...]
#   NAME: qpidd-ubuntu-focal | qpidd-centos7 | qpidd-opensuse-leap15 | qpidd-source-debian |
#         qpidd-fedora40 | qdrouterd-source | qdrouterd-fedora40 | rabbitmq-3.13 | rabbitmq-4 | artemis
# Download mirrors are never built in; pass them:
#   qpidd-centos7:        --var centos_vault_mirror=URL --var epel_archive_mirror=URL
#   qpidd-fedora40,
#   qdrouterd-fedora40:   --var fedora_archive_mirror=URL   (the archive of end-of-life Fedora releases:
#                                                            URL/releases/40/Everything/x86_64/os/ exists)
#   qpidd-source-debian,
#   qdrouterd-source:     --var apache_archive=URL
#
# After the build the image is asked for the version it really contains (`qpidd --version`,
# `qdrouterd --version`, $RABBITMQ_VERSION) and is tagged and labelled with it (ci/README.md, "Image
# names"): amqp1-rig/<broker>:<flavour>-<version> and the alias amqp1-rig/<broker>:<flavour> for qpidd and
# qdrouterd, amqp1-rig/rabbitmq:<version> and :<major.minor>, amqp1-rig/artemis:<version>; labels
# org.amqp1-rig.broker, org.amqp1-rig.flavour, org.amqp1-rig.version (and amqp1-rig.version, the same).
# Environment: HARNESS (default: cargo run -q -p harness --), AMQP1_RIG_IMAGE (an extra tag)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
name="${1:?usage: $0 NAME [--var KEY=VALUE ...]}"; shift
harness="${HARNESS:-cargo run -q -p harness --}"

# name -> template, requested version, base image, broker, flavour, build files
case "$name" in
  qpidd-ubuntu-focal)    t=qpidd-ubuntu-focal;    v=1.39.0; base=ubuntu:20.04;        b=qpidd;     fl=ubuntu-focal;    files=qpidd-entrypoint.sh ;;
  qpidd-centos7)         t=qpidd-centos7;         v=1.39.0; base=centos:7;            b=qpidd;     fl=centos7;         files=qpidd-entrypoint.sh ;;
  qpidd-opensuse-leap15) t=qpidd-opensuse-leap15; v=1.37.0; base=opensuse/leap:15.6;  b=qpidd;     fl=opensuse-leap15; files=qpidd-entrypoint.sh ;;
  qpidd-source-debian)   t=qpidd-source-debian;   v=1.39.0; base=debian:bookworm;     b=qpidd;     fl=source-debian;   files=qpidd-entrypoint.sh ;;
  qpidd-fedora40)        t=qpidd-fedora;          v=1.39.0; base=fedora:40;           b=qpidd;     fl=fedora40;        files=qpidd-entrypoint.sh ;;
  qdrouterd-source)      t=qdrouterd-source;      v=1.19.0; base=debian:bookworm;     b=qdrouterd; fl=source-debian;   files=qdrouterd-entrypoint.sh ;;
  qdrouterd-fedora40)    t=qdrouterd-fedora;      v=1.19.0; base=fedora:40;           b=qdrouterd; fl=fedora40;        files=qdrouterd-entrypoint.sh ;;
  rabbitmq-3.13)         t=rabbitmq-official;     v=3.13;   base=rabbitmq:3.13-management; b=rabbitmq; fl=official; files= ;;
  rabbitmq-4)            t=rabbitmq-official;     v=4.2;    base=rabbitmq:4.2-management;  b=rabbitmq; fl=official; files= ;;
  artemis)               t=artemis;               v=2.37.0; base=apache/activemq-artemis:2.37.0-alpine; b=artemis; fl=official; files= ;;
  *) echo "unknown image '$name' (see --help in the header of $0)" >&2; exit 2 ;;
esac
ctx="$(mktemp -d)"; trap 'rm -rf "$ctx"' EXIT
building="amqp1-rig/$b:building-$name"
# the variables the container backend's image context provides, then the caller's
$harness render "images/$t.Dockerfile.tera" --var "version=$v" --var "base_image=$base" \
  --var "image_name=amqp1-rig/$b:$fl" --var "amqp_port=5672" --var "ppa=qpid/released" "$@" >"$ctx/Dockerfile"
for f in $files; do cp "$root/templates/images/files/$f" "$ctx/"; done
t0=$(date +%s)
docker build --force-rm -t "$building" "$ctx"
echo "[build-registry] $name built in $(( $(date +%s) - t0 )) s" >&2

# the version the image really contains
case "$b" in
  qpidd)     probe=(--entrypoint qpidd "$building" --version) ;;
  qdrouterd) probe=(--entrypoint qdrouterd "$building" --version) ;;
  rabbitmq)  probe=(--entrypoint /bin/sh "$building" -c 'echo "$RABBITMQ_VERSION"') ;;
  *)         probe=() ;;
esac
real=""
if [ ${#probe[@]} -gt 0 ]; then
  real="$(docker run --rm --network none "${probe[@]}" 2>/dev/null | grep -Eo '[0-9]+\.[0-9]+(\.[0-9]+)?' | head -n1 || true)"
fi
if [ -z "$real" ]; then
  echo "[build-registry] warning: could not ask the image for its version; using the template's $v" >&2
  real="$v"
elif [ "$real" != "$v" ] && [ "${real#"$v".}" = "$real" ]; then
  echo "[build-registry] note: asked for $v, the image contains $real (tagged and labelled $real)" >&2
fi
case "$b" in
  qpidd|qdrouterd) tags=("amqp1-rig/$b:$fl-$real" "amqp1-rig/$b:$fl") ;;
  rabbitmq)        tags=("amqp1-rig/$b:$real" "amqp1-rig/$b:$(echo "$real" | cut -d. -f1-2)") ;;
  *)               tags=("amqp1-rig/$b:$real") ;;
esac
[ -n "${AMQP1_RIG_IMAGE:-}" ] && tags+=("$AMQP1_RIG_IMAGE")
printf 'FROM %s\nLABEL amqp1-rig.version="%s" org.amqp1-rig.broker="%s" org.amqp1-rig.flavour="%s" org.amqp1-rig.version="%s" org.amqp1-rig.built="%s"\n' \
  "$building" "$real" "$b" "$fl" "$real" "$(date -u +%Y-%m-%d)" |
  docker build -q $(for tag in "${tags[@]}"; do printf -- '-t %s ' "$tag"; done) - >/dev/null
docker rmi "$building" >/dev/null
echo "[build-registry] ${tags[*]} (version $real)" >&2
