#!/usr/bin/env bash
# The two set-up commands of the README, on a fresh Debian bookworm machine:
#   scripts/bootstrap.sh demo   install what is missing, build, start the emulator and ficbroker
#   scripts/bootstrap.sh test   install what is missing, build, run every test suite
#   scripts/bootstrap.sh stop   stop what `demo` started
# Runs as root, or through sudo when it needs to install packages.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
mode=${1:-}
jobs=$(nproc 2>/dev/null || echo 2)

build_packages=(cmake ninja-build g++ pkg-config libboost1.81-dev libboost-json1.81-dev libssl-dev
                googletest libgtest-dev)
test_packages=(clang-14 clang-format-14 clang-tidy-14 ccache libclang-rt-14-dev libbenchmark-dev curl jq openssl wrk
               python3-azure python3-yaml shellcheck iproute2 iptables prometheus util-linux
               binutils)
demo_packages=(curl jq)

log() { printf '\n==> %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

install_packages() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  # Node.js and npm run the JavaScript SDK compatibility tests; keep an existing Node.js as it is.
  if [ "$mode" = test ] && ! command -v npm >/dev/null 2>&1; then missing+=(nodejs npm); fi
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing: ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
  fi
}

configure_and_build() {  # build-dir, extra cmake args...
  local dir=$1; shift
  # ccache (a test package) only saves rebuilding unchanged files across the suites' builds.
  local launcher=()
  if command -v ccache >/dev/null 2>&1; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
  cmake -S . -B "$dir" -G Ninja "${launcher[@]}" "$@" >/dev/null
  cmake --build "$dir" -j "$jobs"
}

demo_dir=$here/.demo

stop_demo() {
  for name in ficbroker emulator; do
    if [ -f "$demo_dir/$name.pid" ]; then
      kill "$(cat "$demo_dir/$name.pid")" 2>/dev/null || true
      rm -f "$demo_dir/$name.pid"
    fi
  done
}

wait_for() {  # file, seconds
  for _ in $(seq 1 $(( $2 * 10 ))); do [ -s "$1" ] && return 0; sleep 0.1; done
  return 1
}

run_demo() {
  install_packages "${build_packages[@]}" "${demo_packages[@]}"
  log "building (Release)"
  configure_and_build build-release -DCMAKE_BUILD_TYPE=Release -DFICBROKER_BUILD_TESTS=OFF
  stop_demo
  mkdir -p "$demo_dir"
  rm -f "$demo_dir"/*.ready
  log "starting the emulator (IMDS on :18080, Entra over TLS on :18443)"
  nohup build-release/emulator/ficbroker-emulator --http-listen 127.0.0.1:18080 \
    --https-listen 127.0.0.1:18443 --ca-out "$demo_dir/emulator-ca.pem" \
    --ready-file "$demo_dir/emulator.ready" >"$demo_dir/emulator.log" 2>&1 &
  echo $! >"$demo_dir/emulator.pid"
  wait_for "$demo_dir/emulator.ready" 10 || { cat "$demo_dir/emulator.log"; exit 1; }
  # The config holds the demo's identity header: readable by its owner only.
  (umask 077 && sed "s|@DEMO_DIR@|$demo_dir|g" config/demo.jsonc >"$demo_dir/ficbroker.jsonc")
  log "starting ficbroker on 127.0.0.1:8181"
  nohup build-release/src/ficbroker --config "$demo_dir/ficbroker.jsonc" \
    --ready-file "$demo_dir/ficbroker.ready" >"$demo_dir/ficbroker.log" 2>&1 &
  echo $! >"$demo_dir/ficbroker.pid"
  wait_for "$demo_dir/ficbroker.ready" 10 || { cat "$demo_dir/ficbroker.log"; exit 1; }
  cat <<'MSG'

ficbroker is running against the emulator (logs in .demo/). Get a cross-tenant token:

  curl -s -H 'Metadata: true' 'http://127.0.0.1:8181/token?resource=https://graph.microsoft.com'

or as an Azure SDK would, through the App Service protocol:

  curl -s -H 'X-IDENTITY-HEADER: demo-identity-header-0123456789' \
    'http://127.0.0.1:8181/msi/token?api-version=2019-08-01&resource=https://vault.azure.net'

Stop both with: scripts/bootstrap.sh stop
MSG
}

run_tests() {
  install_packages "${build_packages[@]}" "${test_packages[@]}"
  local start=$SECONDS failed=0
  log "format check (clang-format-14)"
  if ! git ls-files '*.cpp' '*.hpp' | xargs clang-format-14 --dry-run -Werror; then
    echo "clang-format: files above need formatting"; failed=1
  fi

  log "build: GCC, warnings as errors"
  configure_and_build build-ci -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFICBROKER_WARNINGS_AS_ERRORS=ON
  log "tests: unit + integration + emulator"
  (cd build-ci && ctest --output-on-failure -j "$jobs" --timeout 300) || failed=1

  # Every suite runs; a missing script is a failure, never a silent skip.
  log "clang-tidy (bugprone-*, functions under 80 lines) on src/"
  if ! git ls-files 'src/*.cpp' | xargs -P "$jobs" -n 1 clang-tidy-14 -p build-ci --quiet; then
    echo "clang-tidy: findings above"; failed=1
  fi
  log "compatibility: real Azure SDK clients"
  bash tests/compat/run.sh build-ci || failed=1
  log "deployment checks"
  bash tests/deploy/run.sh --binary "$here/build-ci/src/ficbroker" || failed=1
  log "transparent mode in a network namespace"
  FICBROKER_BIN=$here/build-ci/src/ficbroker EMULATOR_BIN=$here/build-ci/emulator/ficbroker-emulator \
    bash tests/deploy/transparent_netns_test.sh || failed=1
  log "soak: a minute of load while refreshes fail and connections reset"
  BUILD_DIR=build-ci bash tests/soak/soak.sh || failed=1

  log "build + tests: AddressSanitizer + UndefinedBehaviorSanitizer (GCC)"
  configure_and_build build-asan -DCMAKE_BUILD_TYPE=Debug -DFICBROKER_WARNINGS_AS_ERRORS=ON \
    -DFICBROKER_SANITIZERS=address,undefined
  (cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
     UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
     ctest --output-on-failure -j "$jobs" --timeout 600) || failed=1

  log "build + tests: ThreadSanitizer (clang 14)"
  CXX=clang++-14 configure_and_build build-tsan -DCMAKE_BUILD_TYPE=Debug \
    -DFICBROKER_WARNINGS_AS_ERRORS=ON -DFICBROKER_SANITIZERS=thread
  (cd build-tsan && TSAN_OPTIONS=halt_on_error=1 \
     ctest --output-on-failure -j "$jobs" --timeout 600) || failed=1

  log "fuzzing: every libFuzzer target briefly (clang 14, ASan + UBSan)"
  bash fuzz/run.sh build-fuzz "${FUZZ_SECONDS:-10}" || failed=1

  log "all suites done in $(( SECONDS - start )) s"
  return $failed
}

case "$mode" in
  demo) run_demo ;;
  test) run_tests ;;
  stop) stop_demo ;;
  *) echo "usage: $0 demo|test|stop" >&2; exit 2 ;;
esac
