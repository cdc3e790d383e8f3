#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for a bounded time and fails on a crash, a hang (-timeout) or an
# allocation over the limit (-rss_limit_mb / -malloc_limit_mb).
#
#   ci/scripts/fuzz.sh            # 60 s per target
#   FUZZ_SECONDS=10 ci/scripts/fuzz.sh decode_message scenario
#
# The corpus kept in the repository (fuzz/corpus/<target>/) is read as seeds only: new inputs go to a
# temporary directory, so a run leaves the tree as it was. A crash leaves its input in
# fuzz/artifacts/<target>/ (upload it from CI) and makes the script exit 1.
#
# cargo-fuzz needs a nightly compiler (-Z sanitizer flags); on a stable toolchain RUSTC_BOOTSTRAP=1
# unlocks them. Install the tool once with `cargo install cargo-fuzz --locked`.
set -euo pipefail

cd "$(dirname "$0")/../../fuzz"
seconds="${FUZZ_SECONDS:-60}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi
export RUSTC_BOOTSTRAP="${RUSTC_BOOTSTRAP:-1}"

cargo fuzz build -O

failed=()
for t in "${targets[@]}"; do
  work="$(mktemp -d)"
  echo "== fuzz $t for ${seconds}s"
  if cargo fuzz run -O "$t" "$work" "corpus/$t" -- \
      -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=10 \
      -max_len=65536 -print_final_stats=1 2>"$work.log"; then
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+ +DONE)' "$work.log" || true
  else
    echo "!! $t failed:"
    tail -n 40 "$work.log"
    failed+=("$t")
  fi
  rm -rf "$work" "$work.log"
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzzing found problems in: ${failed[*]} (inputs in fuzz/artifacts/)"
  exit 1
fi
echo "fuzzing: ${#targets[@]} targets ran ${seconds}s each without a crash"
