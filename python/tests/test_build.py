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


def test_stats_of_an_operator_format_through_the_runtime():
    # The call that crashed with two runtimes: stats of an execution with an operator.
    ds = md.range(1000).filter(expr="id > 5")
    assert ds.count() == 994  # ids 6..999
    assert "Rows in: 1000, rows out: 994" in ds.stats()


def _tool(name: str) -> str | None:
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def test_configure_refuses_a_compiler_that_links_libstdcxx_statically(tmp_path):
    cmake, ninja, gxx = _tool("cmake"), _tool("ninja"), shutil.which("g++")
    if not (cmake and ninja and gxx and (REPO / "CMakeLists.txt").exists()):
        pytest.skip("needs cmake, ninja, g++ and the source tree")
    archive = subprocess.run([gxx, "-print-file-name=libstdc++.a"], capture_output=True,
                             text=True).stdout.strip()
    if not Path(archive).is_absolute():
        pytest.skip("g++ has no libstdc++.a to reproduce a static-only toolchain with")
    # A compiler driver that finds libstdc++.a before any libstdc++.so, like a GCC install
    # that ships only the archive.
    static_only = tmp_path / "static-only"
    static_only.mkdir()
    (static_only / "libstdc++.a").symlink_to(archive)
    wrapper = tmp_path / "g++-static-runtime"
    wrapper.write_text(f'#!/bin/sh\nexec {gxx} -L{static_only} "$@"\n')
    wrapper.chmod(0o755)

    # The reproduction is real: what the wrapper links carries libstdc++ inside.
    probe = tmp_path / "probe.cc"
    probe.write_text("#include <sstream>\n"
                     "std::string F(unsigned long n) { std::ostringstream s; s << n; return s.str(); }\n")
    subprocess.run([str(wrapper), "-shared", "-fPIC", str(probe), "-o", str(tmp_path / "probe.so")],
                   check=True)
    assert "libstdc++.so.6" not in needed(str(tmp_path / "probe.so"))
    assert {n for n, _, _ in defined_symbols(str(tmp_path / "probe.so"), "--syms")} & LIBSTDCXX_INTERNALS

    result = subprocess.run(
        [cmake, "-S", str(REPO), "-B", str(tmp_path / "build"), "-G", "Ninja",
         f"-DCMAKE_MAKE_PROGRAM={ninja}", f"-DCMAKE_CXX_COMPILER={wrapper}"],
        capture_output=True, text=True)
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0
    assert f"The C++ compiler {wrapper}" in output
    assert "does not link libstdc++ dynamically" in output
    assert "it links the C++ runtime statically" in output
    assert f"libstdc++.a: {archive}" in output
    assert "CXX=" in output
