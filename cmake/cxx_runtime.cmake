# One C++ runtime per process. The module shares its process with the libstdc++.so.6 that
# Arrow's libraries and Python load; a module that carries its own copy of libstdc++ (a compiler
# that finds only libstdc++.a, or -static-libstdc++) builds and imports, then crashes in the
# runtime's locale/iostream code the first time both copies meet.
#
# Included by CMakeLists.txt: millstream_check_cxx_runtime() links a probe module with the
# project's compiler and flags at configure time. Run as a script
# (cmake -DMODULE=<file> -DREADELF=<readelf> -P cxx_runtime.cmake) it checks a built module.

# Sets <out> to an empty string when the ELF file <file> loads libstdc++.so dynamically, else to
# a sentence saying which runtime it has instead.
function(millstream_cxx_runtime_problem file readelf out)
  execute_process(COMMAND "${readelf}" -d -W "${file}"
                  OUTPUT_VARIABLE _dynamic ERROR_VARIABLE _err RESULT_VARIABLE _rc)
  if(NOT _rc EQUAL 0)
    set(${out} "${readelf} -d ${file} failed: ${_err}" PARENT_SCOPE)
  elseif(_dynamic MATCHES "\\(NEEDED\\)[^\n]*\\[libstdc\\+\\+\\.so")
    set(${out} "" PARENT_SCOPE)
  elseif(_dynamic MATCHES "\\(NEEDED\\)[^\n]*\\[(libc\\+\\+\\.so[^]]*)\\]")
    set(${out} "it links ${CMAKE_MATCH_1} (LLVM's C++ runtime) instead of libstdc++.so.6"
        PARENT_SCOPE)
  else()
    set(${out} "it links the C++ runtime statically: no libstdc++.so in its NEEDED entries, so a copy of libstdc++.a is linked into it"
        PARENT_SCOPE)
  endif()
endfunction()

# Links a small C++ module with the compiler and flags the real module is built with, and stops
# the configure step with a message naming the compiler, its runtime and the fix unless the
# probe loads libstdc++.so.6.
function(millstream_check_cxx_runtime)
  if(NOT CMAKE_SYSTEM_NAME STREQUAL "Linux")
    return()
  endif()
  find_program(MILLSTREAM_READELF NAMES readelf ${CMAKE_READELF})
  if(NOT MILLSTREAM_READELF)
    message(WARNING "readelf not found (binutils): cannot check that the module links libstdc++ dynamically")
    return()
  endif()
  set(_dir "${CMAKE_BINARY_DIR}/cxx_runtime_probe")
  file(MAKE_DIRECTORY "${_dir}")
  # Formats an integer through std::ostream: the code that crashed with two runtimes.
  file(WRITE "${_dir}/probe.cc"
       "#include <sstream>\n#include <string>\n"
       "std::string MillstreamProbe(unsigned long n) { std::ostringstream s; s << n; return s.str(); }\n")
  separate_arguments(_flags UNIX_COMMAND
    "${CMAKE_CXX_FLAGS} ${CMAKE_SHARED_LINKER_FLAGS} ${CMAKE_MODULE_LINKER_FLAGS}")
  execute_process(
    COMMAND "${CMAKE_CXX_COMPILER}" ${_flags} -fPIC -shared "${_dir}/probe.cc" -o "${_dir}/probe.so"
    OUTPUT_VARIABLE _out ERROR_VARIABLE _out RESULT_VARIABLE _rc)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "The C++ compiler ${CMAKE_CXX_COMPILER} cannot link a shared module:\n${_out}")
  endif()
  millstream_cxx_runtime_problem("${_dir}/probe.so" "${MILLSTREAM_READELF}" _problem)
  if(_problem)
    execute_process(COMMAND "${CMAKE_CXX_COMPILER}" -print-file-name=libstdc++.so
                    OUTPUT_VARIABLE _so OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
    execute_process(COMMAND "${CMAKE_CXX_COMPILER}" -print-file-name=libstdc++.a
                    OUTPUT_VARIABLE _a OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
    # The driver prints the bare name back when it does not find the file.
    foreach(_lib _so _a)
      if(NOT IS_ABSOLUTE "${${_lib}}")
        set(${_lib} "not found")
      endif()
    endforeach()
    message(FATAL_ERROR
      "The C++ compiler ${CMAKE_CXX_COMPILER} (${CMAKE_CXX_COMPILER_ID} ${CMAKE_CXX_COMPILER_VERSION}) "
      "does not link libstdc++ dynamically: a probe module it built (${_dir}/probe.so) shows that "
      "${_problem}.\n"
      "The compiler's own library folders hold libstdc++.so: ${_so}; libstdc++.a: ${_a} "
      "(-L folders and -static-libstdc++ in the flags can still pick the archive).\n"
      "millstream's module runs in one process with the libstdc++.so.6 that Arrow's libraries and "
      "Python load, and two C++ runtimes in one process crash. To fix: install this compiler's C++ "
      "development files with the shared library (Debian/Ubuntu: g++, or libstdc++-<N>-dev for GCC "
      "<N>), or set CXX to a compiler that links libstdc++.so (e.g. CXX=/usr/bin/g++) in a fresh "
      "build folder, and drop -static-libstdc++ from CXXFLAGS/LDFLAGS if it is there.")
  endif()
  message(STATUS "C++ runtime: ${CMAKE_CXX_COMPILER} links libstdc++.so dynamically")
endfunction()

if(CMAKE_SCRIPT_MODE_FILE AND MODULE)
  millstream_cxx_runtime_problem("${MODULE}" "${READELF}" _problem)
  if(_problem)
    message(FATAL_ERROR "${MODULE}: ${_problem}; it would crash next to Arrow's libstdc++.so.6")
  endif()
endif()
