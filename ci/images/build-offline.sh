#!/usr/bin/env bash
# Offline image build for amqp1-rig: needs no container registry, only the Debian mirror that this
# machine's apt already uses.
#
#   1. debootstrap --variant=minbase bookworm  ->  docker import  ->  amqp1-rig/debian:bookworm
#   2. docker build FROM that base:
#        amqp1-rig/rabbitmq:3.10        Debian's rabbitmq-server 3.10 with rabbitmq_amqp1_0 enabled
#        amqp1-rig/embedded-broker      the harness binary running `harness broker serve`
#
# Idempotent: an image that already exists is kept unless --force is given (the embedded-broker image
# is also rebuilt when the harness binary changed).
#
# Usage: ci/images/build-offline.sh [--force] [--no-embedded] [--harness-bin PATH] [IMAGE...]
#   IMAGE is one of: base rabbitmq embedded (default: all)
# Environment:
#   DEBIAN_MIRROR       override the mirror read from /etc/apt/sources.list{,.d/*}
#   DEBIAN_SUITE        default bookworm
#   HARNESS_BIN         harness binary for the embedded-broker image (default: target/debug/harness,
#                       or target/release/harness if only that exists)
#   AMQP1_RIG_WORKDIR   scratch directory for the root filesystem (default: /var/tmp)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
templates="$root/templates/images"
suite="${DEBIAN_SUITE:-bookworm}"
base_image="amqp1-rig/debian:${suite}"
rabbit_image="amqp1-rig/rabbitmq:3.10"
embedded_image="amqp1-rig/embedded-broker:latest"
force=0
want=()
harness_bin="${HARNESS_BIN:-}"

log() { printf '[build-offline] %s\n' "$*" >&2; }
die() { printf '[build-offline] error: %s\n' "$*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --force) force=1 ;;
    --no-embedded) want=(base rabbitmq) ;;
    --harness-bin) shift; harness_bin="${1:?--harness-bin needs a path}" ;;
    base|rabbitmq|embedded) want+=("$1") ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) die "unknown argument '$1' (try --help)" ;;
  esac
  shift
done
[ ${#want[@]} -gt 0 ] || want=(base rabbitmq embedded)
wanted() { local w; for w in "${want[@]}"; do [ "$w" = "$1" ] && return 0; done; return 1; }

command -v docker >/dev/null || die "no docker CLI found; install docker.io (or use --backend process / the embedded broker)"
docker info >/dev/null 2>&1 || die "no Docker-compatible daemon answers (set DOCKER_HOST, or use --backend process / the embedded broker)"

have_image() { docker image inspect "$1" >/dev/null 2>&1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
size_of() { docker image inspect -f '{{.Size}}' "$1" | awk '{ printf "%.0f MB", $1 / 1000000 }'; }

# --- the host's Debian mirror (never hard-coded) -------------------------------------------------
# Prints "URI" of the first enabled entry serving $suite (not -security / -updates).
detect_mirror() {
  local f
  if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return; fi
  # deb822 .sources files
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v suite="$suite" '
      function flush() { if (uris != "" && enabled && types ~ /(^| )deb( |$)/ && suites ~ ("(^| )" suite "( |$)")) { split(uris, u, " "); print u[1]; exit 0 } uris = ""; suites = ""; types = ""; enabled = 1 }
      BEGIN { enabled = 1 }
      /^[ \t]*$/ { flush(); next }
      /^[ \t]*#/ { next }
      tolower($1) == "uris:" { $1 = ""; uris = $0; sub(/^ +/, "", uris) }
      tolower($1) == "suites:" { $1 = ""; suites = $0 }
      tolower($1) == "types:" { $1 = ""; types = $0 }
      tolower($1) == "enabled:" && tolower($2) == "no" { enabled = 0 }
      END { flush() }' "$f" | head -n1
  done | head -n1 | grep . && return
  # one-line format
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk -v suite="$suite" '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ } if ($(i+1) == suite) { print $i; exit } }' "$f"
  done | head -n1 | grep . && return
  return 1
}

# Security mirror, if the host has one for $suite-security (optional).
detect_security_mirror() {
  cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
    grep -Ev '^[[:space:]]*#' | grep -Eo '[a-z]+://[^ ]*security[^ ]*' | head -n1 || true
}

# http proxy that the host's apt uses, for debootstrap (which does not read apt.conf).
apt_proxy() { apt-config dump 2>/dev/null | sed -n 's/^Acquire::http::Proxy "\(.*\)";$/\1/p' | head -n1; }

# Remove a (possibly half-built) root filesystem; never descend into a still-mounted /proc or /sys.
cleanup_rootfs() {
  local dir="$1" m
  [ -n "$dir" ] && [ -d "$dir" ] || return 0
  for m in proc sys dev/pts dev; do umount -l "$dir/$m" 2>/dev/null || true; done
  if grep -q " $dir/" /proc/mounts; then log "warning: $dir still has mounts; leaving it"; return 0; fi
  rm -rf "$dir" "$dir.debootstrap.log"
}

build_base() {
  if [ "$force" = 0 ] && have_image "$base_image"; then log "$base_image exists (use --force to rebuild)"; return; fi
  local mirror security workdir rootfs t0 proxy f
  mirror="$(detect_mirror)" || die "could not read a '$suite' mirror from /etc/apt/sources.list or /etc/apt/sources.list.d/* (set DEBIAN_MIRROR)"
  security="$(detect_security_mirror)"
  if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap"
    apt-get -o DPkg::Lock::Timeout=600 install -y debootstrap >/dev/null || {
      apt-get -o DPkg::Lock::Timeout=600 update >/dev/null && apt-get -o DPkg::Lock::Timeout=600 install -y debootstrap >/dev/null; } ||
      die "could not install debootstrap"
  fi
  workdir="${AMQP1_RIG_WORKDIR:-/var/tmp}"
  rootfs="$(mktemp -d "$workdir/amqp1-rig-rootfs.XXXXXX")"
  trap 'cleanup_rootfs "$rootfs"' EXIT
  proxy="$(apt_proxy)"
  log "debootstrap --variant=minbase $suite from the host's mirror into $rootfs"
  t0="$(now)"
  http_proxy="${proxy:-${http_proxy:-}}" debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" \
    >"$rootfs.debootstrap.log" 2>&1 || { tail -n 30 "$rootfs.debootstrap.log" >&2; die "debootstrap failed (log: $rootfs.debootstrap.log)"; }
  rm -f "$rootfs.debootstrap.log"
  log "debootstrap took $(elapsed "$t0") s"

  # apt inside the image uses the same mirror and the host's apt proxy/mirror settings.
  {
    echo "deb $mirror $suite main"
    echo "deb $mirror $suite-updates main"
    [ -n "$security" ] && echo "deb $security $suite-security main"
  } >"$rootfs/etc/apt/sources.list"
  for f in /etc/apt/apt.conf.d/*; do
    [ -f "$f" ] || continue
    # only the network settings (proxy, mirror, validity checks); not the host's dpkg hooks
    if grep -Eq '^[[:space:]]*Acquire' "$f" && ! grep -Eq 'Invoke' "$f"; then cp "$f" "$rootfs/etc/apt/apt.conf.d/"; fi
  done
  # packages installed in image builds must not try to start their services
  printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"; chmod 755 "$rootfs/usr/sbin/policy-rc.d"
  # keep the images small: no recommends, no docs/man pages/locales, no caches
  printf 'APT::Install-Recommends "0";\nAPT::Install-Suggests "0";\n' >"$rootfs/etc/apt/apt.conf.d/90amqp1-rig-small"
  printf 'path-exclude /usr/share/doc/*\npath-include /usr/share/doc/*/copyright\npath-exclude /usr/share/man/*\npath-exclude /usr/share/info/*\npath-exclude /usr/share/locale/*\npath-include /usr/share/locale/locale.alias\n' \
    >"$rootfs/etc/dpkg/dpkg.cfg.d/90amqp1-rig-small"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/var/log/*.log "$rootfs"/tmp/*
  find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
  find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} + 2>/dev/null || true

  t0="$(now)"
  tar --numeric-owner -C "$rootfs" -c . |
    docker import --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' - "$base_image" >/dev/null
  cleanup_rootfs "$rootfs"; trap - EXIT
  log "$base_image imported in $(elapsed "$t0") s ($(size_of "$base_image"))"
}

docker_build() { # image dockerfile context [build args...]
  local image="$1" dockerfile="$2" context="$3"; shift 3
  local t0 old new; t0="$(now)"
  old="$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)"
  DOCKER_BUILDKIT=0 docker build --network host -q -t "$image" -f "$dockerfile" --build-arg "BASE_IMAGE=$base_image" "$@" "$context" >/dev/null 2>"$context/.build.err" ||
    { cat "$context/.build.err" >&2; die "docker build of $image failed"; }
  log "$image built in $(elapsed "$t0") s ($(size_of "$image"))"
  # drop the image this one replaces, so rebuilds do not pile up untagged images
  new="$(docker image inspect -f '{{.Id}}' "$image")"
  if [ -n "$old" ] && [ "$old" != "$new" ]; then docker rmi "$old" >/dev/null 2>&1 || true; fi
}

build_rabbitmq() {
  if [ "$force" = 0 ] && have_image "$rabbit_image"; then log "$rabbit_image exists (use --force to rebuild)"; return; fi
  have_image "$base_image" || die "$base_image is missing (run: $0 base)"
  local ctx; ctx="$(mktemp -d)"
  cp "$templates/debian-rabbitmq.Dockerfile.tera" "$ctx/Dockerfile"
  cp "$templates/files/rabbitmq-entrypoint.sh" "$ctx/"
  docker_build "$rabbit_image" "$ctx/Dockerfile" "$ctx"
  rm -rf "$ctx"
}

build_embedded() {
  local bin="$harness_bin" sum ctx current
  if [ -z "$bin" ]; then
    for bin in "$root/target/debug/harness" "$root/target/release/harness" ""; do [ -x "$bin" ] && break; done
  fi
  [ -n "$bin" ] && [ -x "$bin" ] || die "no harness binary found: run 'cargo build -p harness' first (or pass --harness-bin PATH)"
  sum="$(sha256sum "$bin" | cut -c1-64)"
  current="$(docker image inspect -f '{{ index .Config.Labels "amqp1-rig.harness-sha256" }}' "$embedded_image" 2>/dev/null || true)"
  if [ "$force" = 0 ] && [ "$current" = "$sum" ]; then log "$embedded_image exists for this harness binary (use --force to rebuild)"; return; fi
  have_image "$base_image" || die "$base_image is missing (run: $0 base)"
  ctx="$(mktemp -d)"
  cp "$templates/embedded.Dockerfile.tera" "$ctx/Dockerfile"
  cp "$bin" "$ctx/harness"
  # a debug build carries ~100s of MB of debug info: strip the copy (the host binary stays as it is)
  if command -v strip >/dev/null; then strip --strip-debug "$ctx/harness" 2>/dev/null || true; fi
  docker_build "$embedded_image" "$ctx/Dockerfile" "$ctx" --build-arg "HARNESS_SHA256=$sum"
  rm -rf "$ctx"
}

total0="$(now)"
wanted base && build_base
wanted rabbitmq && build_rabbitmq
wanted embedded && build_embedded
log "done in $(elapsed "$total0") s"
