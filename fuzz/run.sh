#!/usr/bin/env bash
# Builds (if needed) and runs every libFuzzer target for a fixed time each.
#
#   fuzz/run.sh [BUILD_DIR] [SECONDS_PER_TARGET]       defaults: build-fuzz (in the repo), 20
#
# Each target runs on a scratch copy of fuzz/corpus/<target>/ plus the saved reproducers
# fuzz/findings/<target>-* (so a fixed bug stays fixed, and an unfixed one fails every run), with
# its dictionary from fuzz/dict/. Nothing under fuzz/ is modified. A target fails on any crash,
# sanitizer report, broken invariant, leak, timeout or out-of-memory; the last line is
#   fuzz: N passed, M failed
# and the exit status is 0 only when M is 0.
#
# Environment (all optional):
#   FUZZ_TARGETS="fuzz_jwt fuzz_config"  run only these targets
#   FUZZ_FINDINGS=0                      do not add fuzz/findings/ to the corpora
#   FUZZ_JOBS=2                          libFuzzer -fork=N per target (default 1: in-process)
#   FUZZ_OUT=dir                         keep logs, crash inputs and grown corpora there
#                                        (default: a temporary directory, kept only on failure)
#   FICBROKER_FUZZ_IGNORE=a,b            harness checks to skip (see fuzz/fuzz_common.hpp); for
#                                        exploring past a known finding, never for CI
#   UBSAN_OPTIONS / ASAN_OPTIONS         passed through (e.g. a UBSan suppressions file)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
build="${1:-$repo/build-fuzz}"
seconds="${2:-20}"
jobs="${FUZZ_JOBS:-1}"

if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
  echo "usage: fuzz/run.sh [BUILD_DIR] [SECONDS_PER_TARGET]" >&2
  exit 2
fi

# --- build -------------------------------------------------------------------------------------
if [ ! -f "$build/CMakeCache.txt" ]; then
  echo "fuzz: configuring $build"
  launcher=()
  if command -v ccache > /dev/null; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
  CXX="${CXX:-clang++-14}" cmake -S "$repo" -B "$build" -G Ninja "${launcher[@]}" \
    -DFICBROKER_BUILD_FUZZ=ON -DFICBROKER_BUILD_TESTS=OFF \
    -DFICBROKER_SANITIZERS=address,undefined
fi
echo "fuzz: building fuzzers in $build"
# Two run.sh sharing a build directory must not run ninja at the same time.
exec 9> "$build/.ficbroker-fuzz.lock"
if command -v flock > /dev/null; then flock 9; fi
if ! cmake --build "$build" --target ficbroker_fuzzers; then
  echo "fuzz: build failed (is add_subdirectory(fuzz) in the top-level CMakeLists.txt, and was" \
       "$build configured with -DFICBROKER_BUILD_FUZZ=ON?)" >&2
  echo "fuzz: 0 passed, 1 failed"
  exit 1
fi
exec 9>&-
build="$(cd "$build" && pwd)"  # the fuzzers run from scratch directories
list="$build/fuzz/fuzzers.txt"
if [ ! -f "$list" ]; then
  echo "fuzz: $list is missing; reconfigure $build with -DFICBROKER_BUILD_FUZZ=ON" >&2
  echo "fuzz: 0 passed, 1 failed"
  exit 1
fi
targets="${FUZZ_TARGETS:-$(tr '\n' ' ' < "$list")}"

# --- run ---------------------------------------------------------------------------------------
if [ -n "${FUZZ_OUT:-}" ]; then
  out="$FUZZ_OUT"
  mkdir -p "$out"
  keep=1
else
  out="$(mktemp -d "${TMPDIR:-/tmp}/ficbroker-fuzz.XXXXXX")"
  keep=0
fi
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1:report_error_type=1}"
export ASAN_OPTIONS="${ASAN_OPTIONS:-handle_abort=1:detect_leaks=1}"

dict_for() {
  case "$1" in
    fuzz_route_request | fuzz_http_request) echo route_request ;;
    fuzz_config) echo config ;;
    fuzz_token_response) echo token_response ;;
    fuzz_jwt) echo jwt ;;
    *) echo "" ;;
  esac
}
max_len_for() {
  case "$1" in
    fuzz_config) echo 16384 ;;
    fuzz_jwt) echo 2048 ;;
    fuzz_token_response) echo 8192 ;;
    *) echo 4096 ;;
  esac
}

passed=0
failed=0
for target in $targets; do
  exe="$build/fuzz/$target"
  work="$out/$target"
  rm -rf "$work"
  mkdir -p "$work/corpus" "$work/artifacts"
  if [ ! -x "$exe" ]; then
    echo "fuzz: $target: FAIL (no executable $exe)"
    failed=$((failed + 1))
    continue
  fi
  if [ -d "$here/corpus/$target" ]; then cp -R "$here/corpus/$target/." "$work/corpus/"; fi
  if [ "${FUZZ_FINDINGS:-1}" != 0 ]; then
    for f in "$here/findings/$target"-*; do
      if [ -f "$f" ]; then cp "$f" "$work/corpus/"; fi
    done
  fi
  args=(-max_total_time="$seconds" -max_len="$(max_len_for "$target")" -timeout=10
        -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$work/artifacts/")
  dict="$(dict_for "$target")"
  if [ -n "$dict" ] && [ -f "$here/dict/$dict.dict" ]; then args+=(-dict="$here/dict/$dict.dict"); fi
  if [ "$jobs" -gt 1 ]; then args+=(-fork="$jobs"); fi

  echo "fuzz: $target: ${seconds}s, $(ls "$work/corpus" | wc -l) seeds"
  status=0
  (cd "$work" && "$exe" "${args[@]}" "$work/corpus" < /dev/null > "$work/log" 2>&1) || status=$?

  cov="$(grep -Eo 'cov: [0-9]+ ft: [0-9]+' "$work/log" | tail -n 1 || true)"
  execs="$(grep -Eo 'stat::number_of_executed_units: [0-9]+' "$work/log" | tail -n 1 |
           grep -Eo '[0-9]+$' || true)"
  crashes="$(ls "$work/artifacts" | wc -l)"
  if [ "$status" -eq 0 ] && [ "$crashes" -eq 0 ]; then
    echo "fuzz: $target: PASS ${cov:-cov: ?} execs: ${execs:-?}"
    passed=$((passed + 1))
  else
    echo "fuzz: $target: FAIL (exit $status) ${cov:-cov: ?} execs: ${execs:-?}"
    grep -E -A 40 'FUZZ CHECK FAILED|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error|SUMMARY' \
      "$work/log" | head -n 80 || tail -n 60 "$work/log"
    for a in "$work/artifacts"/*; do
      if [ -f "$a" ]; then echo "fuzz: $target: reproducer $a"; fi
    done
    echo "fuzz: $target: replay with: $exe <reproducer>    (full log: $work/log)"
    failed=$((failed + 1))
    keep=1
  fi
done

if [ "$keep" -eq 0 ]; then rm -rf "$out"; else echo "fuzz: logs and inputs kept in $out"; fi
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
