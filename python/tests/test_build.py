"""The built module shares one C++ runtime with Arrow and exports nothing but its entry point.

A module that carries its own copy of libstdc++ (linked from libstdc++.a) imports fine, then
crashes when its copy and the process's libstdc++.so.6 meet (formatting an execution's stats
did). A module that exports its template instances can interpose on Arrow's or torch's.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

import millstream as md
from millstream import _core

READELF = shutil.which("readelf")
pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ELF checks need Linux"),
    pytest.mark.skipif(READELF is None, reason="readelf (binutils) is not installed"),
]

REPO = Path(__file__).resolve().parents[2]

# Defined in libstdc++'s own sources, never instantiated from its headers: a file that defines
# one of them carries a copy of the runtime.
LIBSTDCXX_INTERNALS = {
    "_ZNSt6locale7classicEv",  # std::locale::classic()
    "_ZNSt8ios_base4InitC1Ev",  # std::ios_base::Init::Init()
    "_ZNSo9_M_insertImEERSoT_",  # std::ostream::_M_insert<unsigned long>, where the crash was
}


def readelf(*args: str) -> str:
    return subprocess.run([READELF, "-W", *args], check=True, capture_output=True, text=True).stdout


def needed(path: str) -> list[str]:
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", readelf("-d", path))


def defined_symbols(path: str, table: str) -> list[tuple[str, str, str]]:
    """(name, type, binding) of every symbol defined in the file's dynamic or full table."""
    rows = []
    for line in readelf(table, path).splitlines():
        fields = line.split()
        # Num: Value Size Type Bind Vis Ndx Name
        if len(fields) >= 8 and fields[0].endswith(":") and fields[6] != "UND":
            rows.append((fields[7].split("@")[0], fields[3], fields[4]))
    return rows


def test_module_loads_the_shared_libstdcxx():
    assert "libstdc++.so.6" in needed(_core.__file__)
    names = {name for name, _, _ in defined_symbols(_core.__file__, "--syms")}
    assert not names & LIBSTDCXX_INTERNALS


def test_module_exports_only_its_entry_point():
    exported = {
        name
        for name, kind, bind in defined_symbols(_core.__file__, "--dyn-syms")
        if bind in ("GLOBAL", "WEAK", "UNIQUE") and kind != "SECTION"
    }
    assert exported == {"PyInit__core"}


def test_blocks_cross_to_the_pinned_pyarrow_as_its_own_objects():
    # The pinned pyarrow's C++ api must be found (else every UDF call falls back to the C
    # Data Interface, which releases the GIL per block); and what crosses is pyarrow's type.
    assert _core.pyarrow_api_loaded()
    seen = []

    def keep(batch):
        seen.append(type(batch))
        return batch

    out = md.range(10).map_batches(keep, batch_format="pyarrow").to_arrow()
    assert out.column("id").to_pylist() == list(range(10))
    assert seen and all(t is pa.Table for t in seen)


def test_the_engine_purges_its_jemalloc_arenas():
    # The pinned pyarrow's jemalloc control must be found: without it the pages a
    # spilling exchange frees stay resident for jemalloc's decay (a sort under a 256 MiB
    # limit peaked 530 MB over it instead of 250). Checked on jemalloc's counters in
    # cpp/tests/jemalloc_ctl_test.cc.
    assert _core.jemalloc_purge_available()


def test_stats_of_an_operator_format_through_the_runtime():
    # The call that crashed with two runtimes: stats of an execution with an operator.
    ds = md.range(1000).filter(expr="id > 5")
    assert ds.count() == 994  # ids 6..999
    assert "Rows in: 1000, rows out: 994" in ds.stats()


def _tool(name: str) -> str | None:
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


PROBE = "#include <sstream>\nstd::string F(unsigned long n) { std::ostringstream s; s << n; return s.str(); }\n"


@pytest.fixture
def configure(tmp_path):
    """Runs the project's CMake configure step with extra arguments; returns (rc, output)."""
    cmake, ninja = _tool("cmake"), _tool("ninja")
    if not (cmake and ninja and (REPO / "CMakeLists.txt").exists()):
        pytest.skip("needs cmake, ninja and the source tree")

    def run(*args: str) -> tuple[int, str]:
        result = subprocess.run(
            [cmake, "-S", str(REPO), "-B", str(tmp_path / "build"), "-G", "Ninja",
             f"-DCMAKE_MAKE_PROGRAM={ninja}", *args], capture_output=True, text=True)
        return result.returncode, " ".join((result.stdout + result.stderr).split())

    return run


@pytest.fixture
def gxx_archive():
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("needs g++")
    archive = subprocess.run([gxx, "-print-file-name=libstdc++.a"], capture_output=True,
                             text=True).stdout.strip()
    if not Path(archive).is_absolute():
        pytest.skip("g++ has no libstdc++.a to link statically with")
    return gxx, archive


def test_configure_refuses_a_driver_that_finds_only_libstdcxx_archive(tmp_path, configure,
                                                                     gxx_archive):
    gxx, archive = gxx_archive
    # A compiler driver that finds libstdc++.a before any libstdc++.so, like a GCC install
    # that ships only the archive.
    static_only = tmp_path / "static-only"
    static_only.mkdir()
    (static_only / "libstdc++.a").symlink_to(archive)
    wrapper = tmp_path / "g++-static-runtime"
    wrapper.write_text(f'#!/bin/sh\nexec {gxx} -L{static_only} "$@"\n')
    wrapper.chmod(0o755)
    # The reproduction is real: what the wrapper links carries libstdc++ inside.
    (tmp_path / "probe.cc").write_text(PROBE)
    probe = str(tmp_path / "probe.so")
    subprocess.run([str(wrapper), "-shared", "-fPIC", str(tmp_path / "probe.cc"), "-o", probe],
                   check=True)
    assert "libstdc++.so.6" not in needed(probe)
    assert {name for name, _, _ in defined_symbols(probe, "--syms")} & LIBSTDCXX_INTERNALS

    rc, output = configure(f"-DCMAKE_CXX_COMPILER={wrapper}")
    assert rc != 0
    assert f"The C++ compiler {wrapper} (GNU " in output
    assert "does not link libstdc++ dynamically" in output
    assert "it links the C++ runtime statically" in output
    assert f"libstdc++.a: {archive}" in output
    assert "CXX=" in output


def test_configure_refuses_static_libstdcxx_in_the_link_flags(configure, gxx_archive):
    gxx, _ = gxx_archive
    rc, output = configure(f"-DCMAKE_CXX_COMPILER={gxx}",
                           "-DCMAKE_MODULE_LINKER_FLAGS=-static-libstdc++")
    assert rc != 0
    assert "it links the C++ runtime statically" in output
    assert "drop -static-libstdc++" in output


def test_post_link_check_passes_the_module_and_rejects_a_static_runtime(tmp_path, gxx_archive):
    cmake = _tool("cmake")
    script = REPO / "cmake" / "cxx_runtime.cmake"
    if not (cmake and script.exists()):
        pytest.skip("needs cmake and the source tree")
    gxx, _ = gxx_archive
    (tmp_path / "probe.cc").write_text(PROBE)
    probe = str(tmp_path / "probe.so")
    subprocess.run([gxx, "-static-libstdc++", "-shared", "-fPIC", str(tmp_path / "probe.cc"),
                    "-o", probe], check=True)

    def check(module: str) -> subprocess.CompletedProcess:
        return subprocess.run([cmake, f"-DMODULE={module}", f"-DREADELF={READELF}", "-P",
                               str(script)], capture_output=True, text=True)

    assert check(_core.__file__).returncode == 0
    rejected = check(probe)
    assert rejected.returncode != 0
    assert "it links the C++ runtime statically" in " ".join(rejected.stderr.split())
