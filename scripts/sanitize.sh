#!/usr/bin/env bash
# Sanitizer builds and the tests run on them (CI runs this after `make test`):
#   asan  build/asan, -fsanitize=address,undefined: every C++ test (ctest) with leak checks
#   py    the Python suite on the ASan build of the module (a few timing-bound tests left out)
#   tsan  build/tsan, -fsanitize=thread: every gtest test, the executor's included
# Usage: scripts/sanitize.sh [asan] [py] [tsan]   (no argument: all three, in that order)
# Prints each part's time.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
[ -x .venv/bin/ninja ] || bash scripts/setup.sh   # GoogleTest, ccache, .venv (pyarrow, cmake, ninja)
export PATH="$root/.venv/bin:$PATH"
supp=$root/scripts/sanitizers
parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(asan py tsan)

configure() {  # configure <dir> <sanitizers> [cmake args...]
  local dir=$1 sanitize=$2
  shift 2
  [ -f "$dir/build.ninja" ] && return
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DMILLSTREAM_SANITIZE="$sanitize" -DPython_EXECUTABLE="$root/.venv/bin/python" "$@" >/dev/null
}

export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
# Arrow buffers from malloc, not from Arrow's jemalloc/mimalloc, so ASan sees them.
export ARROW_DEFAULT_MEMORY_POOL=system

run_asan() {
  configure build/asan address,undefined -DMILLSTREAM_BUILD_TESTS=ON -DMILLSTREAM_BUILD_EXAMPLES=ON
  ninja -C build/asan -j2
  ASAN_OPTIONS="detect_leaks=1:detect_stack_use_after_return=1:check_initialization_order=1:strict_init_order=1" \
    ctest --test-dir build/asan --output-on-failure -j2
}

run_py() {
  configure build/asan address,undefined -DMILLSTREAM_BUILD_TESTS=ON -DMILLSTREAM_BUILD_EXAMPLES=ON
  ninja -C build/asan -j2 _core
  # An import tree of its own: the package's Python files and the ASan module; the .venv's
  # installed module stays as it is.
  rm -rf build/asan/pkg && mkdir -p build/asan/pkg
  cp -r python/millstream build/asan/pkg/
  cp build/asan/_core.*.so build/asan/pkg/millstream/
  # The interpreter is not built with ASan: its runtime comes first, and libstdc++ with it so
  # that ASan finds __cxa_throw at start-up (pyarrow loads libstdc++ only later otherwise).
  # Leaks are not checked: the interpreter keeps much of what it allocates until exit.
  # Left out: 600 executions in a 20 s limit (8x slower under ASan), resident-memory
  # bounds (ASan's shadow and quarantine memory are not the engine's), and the Ray
  # backend's tests (marker "ray": a local cluster's raylets and workers under the ASan
  # runtime outrun the tests' waits; the engine code its tasks run is what the rest checks).
  LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so)" \
  ASAN_OPTIONS="detect_leaks=0" PYTHONMALLOC=malloc PYTHONPATH="$root/build/asan/pkg" \
    .venv/bin/python -m pytest -q -p no:cacheprovider python/tests -m "not ray" \
      --deselect python/tests/test_process.py::test_many_small_executions_never_stall \
      --deselect python/tests/test_executor.py::test_resident_memory_follows_a_stalled_consumer \
      --deselect python/tests/test_executor.py::test_resident_memory_returns_after_executions \
      --deselect python/tests/test_context.py::test_stalled_consumer_memory_stays_bounded
}

run_tsan() {
  configure build/tsan thread -DMILLSTREAM_BUILD_TESTS=ON -DMILLSTREAM_BUILD_PYTHON=OFF
  ninja -C build/tsan -j2 millstream_tests
  # GCC 12's TSan cannot map its shadow memory under high-entropy ASLR on newer kernels
  # ("unexpected memory mapping"): run without address randomisation where allowed.
  local norandom=()
  setarch "$(uname -m)" -R true 2>/dev/null && norandom=(setarch "$(uname -m)" -R)
  # The engine pool on the default (system) allocator: jemalloc's fork handlers take more
  # locks at once than TSan's deadlock detector can track (a CHECK failure at fork()).
  MILLSTREAM_MEMORY_POOL=default TSAN_OPTIONS="second_deadlock_stack=1:suppressions=$supp/tsan.supp" \
    "${norandom[@]}" build/tsan/millstream_tests
}

summary=()
for part in "${parts[@]}"; do
  case $part in asan | py | tsan) ;; *) echo "unknown part '$part' (asan, py, tsan)" >&2; exit 2 ;; esac
  echo "== sanitize: $part"
  start=$SECONDS
  "run_$part"
  summary+=("$part $((SECONDS - start)) s")
  echo "== sanitize: $part passed in $((SECONDS - start)) s"
done
echo "== sanitize: passed (${summary[*]})"
