#!/usr/bin/env bash
# Offline image build for amqp1-rig: needs no container registry, only the Debian mirror that this
# machine's apt already uses.
#
#   1. debootstrap --variant=minbase SUITE  ->  docker import  ->  amqp1-rig/debian:SUITE
#   2. docker build FROM that base (templates/images/debian-rabbitmq.Dockerfile.tera,
#      templates/images/embedded.Dockerfile.tera):
#        rabbitmq            Debian 12 (bookworm) rabbitmq-server 3.10 + rabbitmq_amqp1_0
#        rabbitmq-trixie     Debian 13 (trixie)   rabbitmq-server 4.0 on Erlang 27 (AMQP 1.0 built in)
#        rabbitmq-sid        Debian unstable      rabbitmq-server as of the day of the build (4.3 in 2026-12)
#        embedded            the harness binary running `harness broker serve`
#   3. every RabbitMQ image is tagged and labelled with the version it really contains (read from dpkg
#      inside the image after the build; see "Image names" in ci/README.md):
#        amqp1-rig/rabbitmq:<version>        e.g. 4.3.6       (exact upstream version)
#        amqp1-rig/rabbitmq:<major.minor>    e.g. 4.3         (alias: the newest build of that series)
#        amqp1-rig/rabbitmq:debian-<suite>   e.g. debian-sid  (alias: what this script built from the suite)
#        labels org.amqp1-rig.version=4.3.6, org.amqp1-rig.package-version, org.amqp1-rig.erlang,
#               org.amqp1-rig.distro=debian-sid, org.amqp1-rig.broker=rabbitmq
#   4. each image that was (re)built is started once: time to AMQP readiness and time to stop are printed.
#
# Idempotent: an image that already exists (its debian-<suite> alias, or amqp1-rig/debian:<suite>) is kept
# unless --force is given; the embedded-broker image is rebuilt when the harness binary changed. Debian
# unstable moves: `--force rabbitmq-sid` may get a newer version, which gets its own tags beside the old.
#
# Usage: ci/images/build-offline.sh [--force] [--no-embedded] [--no-check] [--harness-bin PATH] [IMAGE...]
#   IMAGE: base rabbitmq embedded rabbitmq-trixie rabbitmq-sid rabbitmq4 (= both 4.x) base-trixie base-sid
#   default: base rabbitmq embedded rabbitmq-trixie rabbitmq-sid
# Environment:
#   DEBIAN_MIRROR       override the mirror read from /etc/apt/sources.list{,.d/*}
#   DEBIAN_SUITE        suite of the `base` image and the embedded/3.10 images (default bookworm)
#   HARNESS_BIN         harness binary for the embedded-broker image (default: target/debug/harness,
#                       or target/release/harness if only that exists)
#   AMQP1_RIG_WORKDIR   scratch directory for the root filesystem (default: /var/tmp)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
templates="$root/templates/images"
main_suite="${DEBIAN_SUITE:-bookworm}"
rabbit_repo="amqp1-rig/rabbitmq"
embedded_image="amqp1-rig/embedded-broker:latest"
force=0
check=1
want=()
harness_bin="${HARNESS_BIN:-}"

log() { printf '[build-offline] %s\n' "$*" >&2; }
die() { printf '[build-offline] error: %s\n' "$*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --force) force=1 ;;
    --no-embedded) want=(base rabbitmq rabbitmq-trixie rabbitmq-sid) ;;
    --no-check) check=0 ;;
    --harness-bin) shift; harness_bin="${1:?--harness-bin needs a path}" ;;
    base|rabbitmq|embedded|rabbitmq-trixie|rabbitmq-sid|base-trixie|base-sid) want+=("$1") ;;
    rabbitmq4) want+=(rabbitmq-trixie rabbitmq-sid) ;;
    -h|--help) sed -n '2,36p' "$0"; exit 0 ;;
    *) die "unknown argument '$1' (try --help)" ;;
  esac
  shift
done
[ ${#want[@]} -gt 0 ] || want=(base rabbitmq embedded rabbitmq-trixie rabbitmq-sid)
wanted() { local w; for w in "${want[@]}"; do [ "$w" = "$1" ] && return 0; done; return 1; }

command -v docker >/dev/null || die "no docker CLI found; install docker.io (or use --backend process / the embedded broker)"
docker info >/dev/null 2>&1 || die "no Docker-compatible daemon answers (set DOCKER_HOST, or use --backend process / the embedded broker)"

have_image() { docker image inspect "$1" >/dev/null 2>&1; }
image_id() { docker image inspect -f '{{.Id}}' "$1" 2>/dev/null || true; }
label_of() { docker image inspect -f "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null || true; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
size_of() { docker image inspect -f '{{.Size}}' "$1" | awk '{ printf "%.0f MB", $1 / 1000000 }'; }
base_of() { echo "amqp1-rig/debian:$1"; }

# --- the host's Debian mirror (never hard-coded) -------------------------------------------------
# Prints the URI of the first enabled entry serving suite $1 (not -security / -updates) of the given
# sources files.
mirror_for_suite() {
  local suite="$1" f
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

# The mirror for suite $1: DEBIAN_MIRROR, else the host's entry for that suite, else the host's entry for
# its own release (a Debian mirror serves every suite; a host on bookworm lists no trixie or sid entry).
detect_mirror() {
  local host_suite
  if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return; fi
  mirror_for_suite "$1" && return
  host_suite="$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")"
  [ -n "$host_suite" ] && [ "$host_suite" != "$1" ] && mirror_for_suite "$host_suite" && return
  return 1
}

# Security mirror, if the host has one (optional; the suite is appended by the caller).
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

ensure_debootstrap() {
  command -v debootstrap >/dev/null && return
  log "installing debootstrap"
  apt-get -o DPkg::Lock::Timeout=600 install -y debootstrap >/dev/null || {
    apt-get -o DPkg::Lock::Timeout=600 update >/dev/null && apt-get -o DPkg::Lock::Timeout=600 install -y debootstrap >/dev/null; } ||
    die "could not install debootstrap"
}

# apt inside the image: the same mirror and the host's apt network settings. Unstable's Release file is
# often past its Valid-Until date on mirrors, so apt must not insist on it there.
configure_apt() { # rootfs suite mirror
  local rootfs="$1" suite="$2" mirror="$3" security f
  security="$(detect_security_mirror)"
  {
    echo "deb $mirror $suite main"
    case "$suite" in
      sid|unstable) ;;
      *) echo "deb $mirror $suite-updates main"
         [ -n "$security" ] && echo "deb $security $suite-security main" ;;
    esac
  } >"$rootfs/etc/apt/sources.list"
  for f in /etc/apt/apt.conf.d/*; do
    [ -f "$f" ] || continue
    # only the network settings (proxy, mirror, validity checks); not the host's dpkg hooks
    if grep -Eq '^[[:space:]]*Acquire' "$f" && ! grep -Eq 'Invoke' "$f"; then cp "$f" "$rootfs/etc/apt/apt.conf.d/"; fi
  done
  case "$suite" in
    sid|unstable) echo 'Acquire::Check-Valid-Until "false";' >"$rootfs/etc/apt/apt.conf.d/90amqp1-rig-unstable" ;;
  esac
}

# Keep the images small and inert: no recommends, no docs/man pages/locales, no caches, no service starts.
slim_rootfs() { # rootfs
  local rootfs="$1"
  printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"; chmod 755 "$rootfs/usr/sbin/policy-rc.d"
  printf 'APT::Install-Recommends "0";\nAPT::Install-Suggests "0";\n' >"$rootfs/etc/apt/apt.conf.d/90amqp1-rig-small"
  printf 'path-exclude /usr/share/doc/*\npath-include /usr/share/doc/*/copyright\npath-exclude /usr/share/man/*\npath-exclude /usr/share/info/*\npath-exclude /usr/share/locale/*\npath-include /usr/share/locale/locale.alias\n' \
    >"$rootfs/etc/dpkg/dpkg.cfg.d/90amqp1-rig-small"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/var/log/*.log "$rootfs"/tmp/*
  find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
  find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} + 2>/dev/null || true
}

build_base() { # suite
  local suite="$1" image mirror workdir rootfs t0 proxy
  image="$(base_of "$suite")"
  if [ "$force" = 0 ] && have_image "$image"; then log "$image exists (use --force to rebuild)"; return; fi
  mirror="$(detect_mirror "$suite")" || die "could not read a Debian mirror from /etc/apt/sources.list or /etc/apt/sources.list.d/* (set DEBIAN_MIRROR)"
  ensure_debootstrap
  [ -e "/usr/share/debootstrap/scripts/$suite" ] || die "this debootstrap does not know suite '$suite' (upgrade debootstrap)"
  workdir="${AMQP1_RIG_WORKDIR:-/var/tmp}"
  rootfs="$(mktemp -d "$workdir/amqp1-rig-rootfs.XXXXXX")"
  current_rootfs="$rootfs"
  proxy="$(apt_proxy)"
  log "debootstrap --variant=minbase $suite from the host's mirror into $rootfs"
  t0="$(now)"
  http_proxy="${proxy:-${http_proxy:-}}" debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" \
    >"$rootfs.debootstrap.log" 2>&1 || { tail -n 30 "$rootfs.debootstrap.log" >&2; die "debootstrap of $suite failed (log: $rootfs.debootstrap.log)"; }
  rm -f "$rootfs.debootstrap.log"
  log "debootstrap $suite took $(elapsed "$t0") s"
  configure_apt "$rootfs" "$suite" "$mirror"
  slim_rootfs "$rootfs"

  t0="$(now)"
  tar --numeric-owner -C "$rootfs" -c . |
    docker import --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' \
      --change "LABEL amqp1-rig=1 org.amqp1-rig.distro=debian-$suite org.amqp1-rig.built=$(date -u +%Y-%m-%d)" - "$image" >/dev/null
  cleanup_rootfs "$rootfs"; current_rootfs=""
  log "$image imported in $(elapsed "$t0") s ($(size_of "$image"))"
}

docker_build() { # image dockerfile context base [build args...]
  local image="$1" dockerfile="$2" context="$3" base="$4"; shift 4
  local t0 old new; t0="$(now)"
  old="$(image_id "$image")"
  DOCKER_BUILDKIT=0 docker build --network host --force-rm -q -t "$image" -f "$dockerfile" --build-arg "BASE_IMAGE=$base" "$@" "$context" >/dev/null 2>"$context/.build.err" ||
    { cat "$context/.build.err" >&2; die "docker build of $image failed"; }
  log "$image built in $(elapsed "$t0") s ($(size_of "$image"))"
  # drop the image this one replaces, so rebuilds do not pile up untagged images
  new="$(image_id "$image")"
  if [ -n "$old" ] && [ "$old" != "$new" ]; then docker rmi "$old" >/dev/null 2>&1 || true; fi
}

# Labels and tags a built RabbitMQ image with what it really contains (dpkg inside the image says).
# src: the image as built; suite: the Debian suite it came from.
stamp_rabbitmq() { # src suite
  local src="$1" suite="$2" facts pkg erl ver mm olds tags t o
  facts="$(docker run --rm --network none --entrypoint /bin/sh "$src" -c \
    'dpkg-query -W -f "\${Version}\n" rabbitmq-server; cat /usr/lib/erlang/releases/*/OTP_VERSION')" ||
    die "could not read rabbitmq-server's version from $src"
  pkg="$(printf '%s\n' "$facts" | sed -n 1p)"
  erl="$(printf '%s\n' "$facts" | sed -n 2p)"
  ver="${pkg#*:}"; ver="${ver%%-*}"; ver="${ver%%+*}"; ver="${ver%%~*}"
  [[ "$ver" =~ ^[0-9]+\.[0-9]+(\.[0-9]+)?$ ]] || die "unexpected rabbitmq-server version '$pkg' in $src"
  mm="$(echo "$ver" | cut -d. -f1-2)"
  tags=("$rabbit_repo:$ver" "$rabbit_repo:$mm" "$rabbit_repo:debian-$suite")
  olds=(); for t in "${tags[@]}"; do olds+=("$(image_id "$t")"); done
  printf 'FROM %s\nLABEL amqp1-rig.image="rabbitmq-%s" amqp1-rig.version="%s" org.amqp1-rig.broker="rabbitmq" org.amqp1-rig.version="%s" org.amqp1-rig.package-version="%s" org.amqp1-rig.erlang="%s" org.amqp1-rig.distro="debian-%s" org.amqp1-rig.built="%s"\n' \
    "$src" "$ver" "$ver" "$ver" "$pkg" "$erl" "$suite" "$(date -u +%Y-%m-%d)" |
    DOCKER_BUILDKIT=0 docker build -q $(for t in "${tags[@]}"; do printf -- '-t %s ' "$t"; done) - >/dev/null 2>"$workdir_tmp/label.err" ||
    { cat "$workdir_tmp/label.err" >&2; die "could not label $src"; }
  # images those tags pointed at before, now untagged, go away
  for o in "${olds[@]}"; do
    [ -n "$o" ] && [ "$o" != "$(image_id "${tags[0]}")" ] && docker rmi "$o" >/dev/null 2>&1 || true
  done
  log "${tags[*]}: RabbitMQ $ver (Debian $pkg, Erlang $erl, $suite; $(size_of "${tags[0]}"))"
  stamped="${tags[0]}"
}

# Starts an image once: seconds until its AMQP port answers the AMQP protocol header, and until
# `docker stop` returns (a broker that ignores SIGTERM would take the 10 s stop timeout).
check_image() { # image [docker run args...]
  local image="$1"; shift
  [ "$check" = 1 ] || return 0
  local cid port t0 ready stop reply
  t0="$(now)"
  cid="$(docker run -d --label amqp1-rig=1 -p 127.0.0.1::5672 "$@" "$image")"
  port="$(docker port "$cid" 5672/tcp | head -n1 | sed 's/.*://')"
  ready=""
  while awk -v a="$t0" -v b="$(now)" 'BEGIN { exit !(b - a < 120) }'; do
    if [ "$(docker inspect -f '{{.State.Running}}' "$cid")" != true ]; then break; fi
    # the SASL layer's protocol header, answered in kind by every AMQP 1.0 broker that asks for SASL
    reply="$(timeout 2 bash -c 'exec 3<>/dev/tcp/127.0.0.1/'"$port"'; printf "AMQP\003\001\000\000" >&3; head -c 8 <&3 | od -An -tx1' 2>/dev/null | tr -d ' \n' || true)"
    if [ "$reply" = 414d515003010000 ]; then ready="$(elapsed "$t0")"; break; fi
    sleep 0.2
  done
  if [ -z "$ready" ]; then
    docker logs "$cid" 2>&1 | tail -n 30 >&2; docker rm -f "$cid" >/dev/null
    die "$image did not answer AMQP on its port within 120 s"
  fi
  t0="$(now)"; docker stop "$cid" >/dev/null; stop="$(elapsed "$t0")"
  docker rm "$cid" >/dev/null
  log "$image: AMQP ready $ready s after docker run, stopped in $stop s"
}

build_rabbitmq() { # suite
  local suite="$1" alias base ctx
  alias="$rabbit_repo:debian-$suite"
  base="$(base_of "$suite")"
  if [ "$force" = 0 ] && have_image "$alias"; then log "$alias ($(label_of "$alias" org.amqp1-rig.version)) exists (use --force to rebuild)"; return; fi
  have_image "$base" || build_base "$suite"
  ctx="$(mktemp -d)"
  cp "$templates/debian-rabbitmq.Dockerfile.tera" "$ctx/Dockerfile"
  cp "$templates/files/rabbitmq-entrypoint.sh" "$ctx/"
  docker_build "$rabbit_repo:building-$suite" "$ctx/Dockerfile" "$ctx" "$base"
  rm -rf "$ctx"
  stamp_rabbitmq "$rabbit_repo:building-$suite" "$suite"
  docker rmi "$rabbit_repo:building-$suite" >/dev/null
  check_image "$stamped"
}

build_embedded() {
  local bin="$harness_bin" sum ctx current base
  base="$(base_of "$main_suite")"
  if [ -z "$bin" ]; then
    for bin in "$root/target/debug/harness" "$root/target/release/harness" ""; do [ -x "$bin" ] && break; done
  fi
  [ -n "$bin" ] && [ -x "$bin" ] || die "no harness binary found: run 'cargo build -p harness' first (or pass --harness-bin PATH)"
  sum="$(sha256sum "$bin" | cut -c1-64)"
  current="$(label_of "$embedded_image" amqp1-rig.harness-sha256)"
  if [ "$force" = 0 ] && [ "$current" = "$sum" ]; then log "$embedded_image exists for this harness binary (use --force to rebuild)"; return; fi
  have_image "$base" || die "$base is missing (run: $0 base)"
  ctx="$(mktemp -d)"
  cp "$templates/embedded.Dockerfile.tera" "$ctx/Dockerfile"
  cp "$bin" "$ctx/harness"
  # a debug build carries ~100s of MB of debug info: strip the copy (the host binary stays as it is)
  if command -v strip >/dev/null; then strip --strip-debug "$ctx/harness" 2>/dev/null || true; fi
  docker_build "$embedded_image" "$ctx/Dockerfile" "$ctx" "$base" --build-arg "HARNESS_SHA256=$sum"
  rm -rf "$ctx"
}

total0="$(now)"
stamped=""
current_rootfs=""
workdir_tmp="$(mktemp -d)"
trap 'cleanup_rootfs "$current_rootfs"; rm -rf "$workdir_tmp"' EXIT
wanted base && build_base "$main_suite"
wanted base-trixie && build_base trixie
wanted base-sid && build_base sid
wanted rabbitmq && build_rabbitmq "$main_suite"
wanted embedded && build_embedded
wanted rabbitmq-trixie && build_rabbitmq trixie
wanted rabbitmq-sid && build_rabbitmq sid
log "done in $(elapsed "$total0") s"
