#!/usr/bin/env bash
# Builds millstream and runs its tests beyond this machine's own Python and compiler:
#   py3.10 py3.11 py3.12 py3.13  each Python found under pyenv (~/.pyenv/versions/3.X.*), in its
#                                own venv and build folder, build/py3.X/{venv,cmake}
#   trixie                       a Debian 13 root (GCC 14, Python 3.13) made with debootstrap from
#                                the host's Debian mirror, cached in $MILLSTREAM_TRIXIE_ROOT
#                                (default /var/cache/millstream-trixie); the repository is bind
#                                mounted at /src inside it and builds in build/trixie, C++ tests
#                                included.
# Usage: scripts/portability.sh [--smoke] [TARGET...]   (no TARGET: all five)
#   --smoke  runs the smoke subset (SMOKE_TESTS) instead of the whole Python suite.
#   (--inside-trixie is the part that the script runs inside the root.)
# A pyenv Python that is not installed is skipped with a message; every other failure fails the
# run, after the remaining targets have run. Each step's time is printed as
# "[portability] TARGET step: N s", then a summary of the targets.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

# Quick files that still cross every layer: the built module's ELF checks, plans, the
# executor, Python UDFs and Parquet round trips.
SMOKE_TESTS=(python/tests/test_build.py python/tests/test_executor.py
             python/tests/test_transforms.py python/tests/test_sources.py)
TRIXIE_ROOT=${MILLSTREAM_TRIXIE_ROOT:-/var/cache/millstream-trixie}
PIP=(pip install -q --disable-pip-version-check)

smoke=0
targets=()
inside=0
for arg in "$@"; do
  case "$arg" in
    --smoke) smoke=1 ;;
    --inside-trixie) inside=1 ;;
    py3.10|py3.11|py3.12|py3.13|trixie) targets+=("$arg") ;;
    *) echo "portability.sh: unknown argument '$arg' (targets: py3.10 py3.11 py3.12 py3.13 trixie; option: --smoke)" >&2
       exit 2 ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=(py3.10 py3.11 py3.12 py3.13 trixie)

step_start=0
step() { step_start=$SECONDS; echo "[portability] $1 $2 ..."; }
step_done() { echo "[portability] $1 $2: $((SECONDS - step_start)) s"; }

# Runs the Python tests (whole suite, or the smoke subset) with PYTHON, from a folder outside the
# source tree so that the installed package is the one imported.
run_pytest() {
  local python=$1 workdir=$2
  local tests=("$REPO/python/tests")
  if [ $smoke = 1 ]; then tests=("${SMOKE_TESTS[@]/#/$REPO/}"); fi
  (cd "$workdir" && "$python" -m pytest -q -p no:cacheprovider "${tests[@]}")
}

# Builds and installs the package from the repository into VENV with BUILD_DIR as the CMake
# build folder; extra arguments are passed to pip as config settings.
build_package() {
  local venv=$1 build_dir=$2
  shift 2
  "$venv/bin/pip" install -q --disable-pip-version-check --no-build-isolation --no-deps \
    "--config-settings=build-dir=$build_dir" "$@" "$REPO"
}

pyenv_target() {
  local ver=${1#py} dir=$REPO/build/$1
  local python
  python=$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$ver".*/bin/python"$ver" 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$python" ]; then
    echo "[portability] $1: skipped, no Python $ver under ${PYENV_ROOT:-$HOME/.pyenv}/versions"
    return 0
  fi
  step "$1" "venv + requirements ($("$python" --version))"
  [ -x "$dir/venv/bin/python" ] || "$python" -m venv "$dir/venv"
  "$dir/venv/bin/${PIP[0]}" "${PIP[@]:1}" -r requirements-dev.txt
  step_done "$1" "venv + requirements"
  step "$1" build
  build_package "$dir/venv" "$dir/cmake"
  step_done "$1" build
  step "$1" pytest
  run_pytest "$dir/venv/bin/python" "$dir"
  step_done "$1" pytest
}

# The host's Debian mirror (first URI in its apt sources), which the root is made from.
host_mirror() {
  local uri
  uri=$(grep -h -o -E '^URIs:\s*\S+' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -m1 -E '/debian/?$' | awk '{print $2}' || true)
  [ -n "$uri" ] || uri=$(grep -h -o -E '^deb\s+\S+/debian/?\s' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | head -n 1 || true)
  echo "${uri:-http://deb.debian.org/debian}"
}

# Runs a command in the root with /proc, /dev and the repository (at /src) mounted, in a private
# mount namespace: the mounts vanish with it, however the command ends.
in_root() {
  local root=$1
  shift
  mkdir -p "$root/src"
  unshare --mount --propagation private bash -euc '
    root=$1; repo=$2; shift 2
    mount -t proc proc "$root/proc"
    mount --rbind /dev "$root/dev"
    mount --bind "$repo" "$root/src"
    exec chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
      PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"' _ "$root" "$REPO" "$@"
}

# What the root gets on top of debootstrap's minimal base; a change here reinstalls on the next run.
ROOT_PACKAGES="g++ python3 python3-dev python3-venv libgtest-dev ccache binutils"

# Makes the Debian 13 root: debootstrap once (marked by .millstream-debootstrapped, tried twice
# since it downloads), then the build packages (.millstream-packages lists what is installed).
make_trixie_root() {
  local root=$1
  if [ ! -f "$root/.millstream-debootstrapped" ]; then
    command -v debootstrap >/dev/null 2>&1 ||
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
    local mirror attempt
    mirror=$(host_mirror)
    step trixie "debootstrap from $mirror"
    for attempt in 1 2; do
      rm -rf "$root"
      if debootstrap --variant=minbase trixie "$root" "$mirror" >"$root.debootstrap.log" 2>&1; then
        break
      fi
      tail -n 20 "$root.debootstrap.log" >&2
      if [ $attempt = 2 ]; then
        echo "portability.sh: debootstrap of trixie into $root from $mirror failed twice (log: $root.debootstrap.log)" >&2
        exit 1
      fi
    done
    touch "$root/.millstream-debootstrapped"
    step_done trixie debootstrap
  fi
  if [ "$(cat "$root/.millstream-packages" 2>/dev/null)" != "$ROOT_PACKAGES" ]; then
    step trixie "apt-get install $ROOT_PACKAGES"
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    in_root "$root" sh -c "apt-get -o Acquire::Retries=3 update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get -o Acquire::Retries=3 install -y -qq \
        --no-install-recommends $ROOT_PACKAGES >/dev/null"
    echo "$ROOT_PACKAGES" >"$root/.millstream-packages"
    step_done trixie "apt-get install"
  fi
}

trixie_target() {
  local root=$TRIXIE_ROOT
  if [ "$(id -u)" != 0 ]; then
    echo "[portability] trixie: skipped, making and entering a root needs root (debootstrap, chroot)"
    return 0
  fi
  mkdir -p "$(dirname "$root")"
  # One run at a time per root: it is shared by every checkout on the machine.
  exec 9>"$root.lock"
  flock 9
  make_trixie_root "$root"
  # Network settings and pip's configuration follow the host's, refreshed on each run.
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  cp /etc/hosts "$root/etc/hosts"
  mkdir -p "$root/etc/ssl/certs"
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  {
    echo "[global]"
    echo "cert = /etc/ssl/certs/ca-certificates.crt"
    echo "default-timeout = 180"
    local index
    index=$(pip config get global.index-url 2>/dev/null || true)
    if [ -n "$index" ]; then echo "index-url = $index"; fi
  } >"$root/etc/pip.conf"
  local args=(--inside-trixie)
  if [ $smoke = 1 ]; then args+=(--smoke); fi
  in_root "$root" bash /src/scripts/portability.sh "${args[@]}"
  flock -u 9
}

# Inside the Debian 13 root: venv in /opt/millstream-venv, build in /src/build/trixie.
inside_trixie() {
  local venv=/opt/millstream-venv dir=$REPO/build/trixie
  step trixie "venv + requirements ($(g++ --version | head -n 1); $(python3 --version))"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/${PIP[0]}" "${PIP[@]:1}" -r requirements-dev.txt
  step_done trixie "venv + requirements"
  step trixie build
  build_package "$venv" "$dir/cmake" --config-settings=cmake.define.MILLSTREAM_BUILD_TESTS=ON \
    --config-settings=cmake.define.MILLSTREAM_BUILD_EXAMPLES=ON
  step_done trixie build
  step trixie ctest
  # The example writes under the build folder; the C++ suite runs whole (it takes seconds).
  PATH=$venv/bin:$PATH ctest --test-dir "$dir/cmake" --output-on-failure -j2
  step_done trixie ctest
  step trixie pytest
  run_pytest "$venv/bin/python" "$dir"
  step_done trixie pytest
}

if [ $inside = 1 ]; then
  inside_trixie
  exit 0
fi
# Every target runs, even after one fails; the summary says which passed.
total_start=$SECONDS
summary=()
failed=0
for target in "${targets[@]}"; do
  target_start=$SECONDS
  set +e
  (
    set -e
    case "$target" in
      py3.*) pyenv_target "$target" ;;
      trixie) trixie_target ;;
    esac
  )
  rc=$?
  set -e
  if [ $rc = 0 ]; then outcome=ok; else outcome="FAILED (exit $rc)"; failed=1; fi
  summary+=("$target: $outcome in $((SECONDS - target_start)) s")
done
echo "[portability] summary:"
printf '  %s\n' "${summary[@]}"
echo "[portability] all of ${targets[*]}: $((SECONDS - total_start)) s"
exit $failed
