# ctest package_consumer: installs the kvsteer package from a build tree into a scratch prefix,
# then configures, builds and runs tests/package/consumer against that prefix alone (plus
# llama.cpp's), so that a header, target or dependency missing from the install fails here.
#
# cmake -DBUILD_DIR=... -DWORK_DIR=... -DCONSUMER_DIR=... -DLLAMA_PREFIX=... -DMODEL=...
#       -DN_VOCAB=... -DGENERATOR=... -DCXX_COMPILER=... [-DBUILD_TYPE=...] [-DSANITIZE=...]
#       -P run_consumer.cmake
foreach(var BUILD_DIR WORK_DIR CONSUMER_DIR LLAMA_PREFIX MODEL N_VOCAB GENERATOR CXX_COMPILER)
  if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
    message(FATAL_ERROR "run_consumer.cmake: ${var} is not set")
  endif()
endforeach()
if(NOT EXISTS "${MODEL}")
  message(FATAL_ERROR "model '${MODEL}' does not exist (configure with KVSTEER_STORIES_GGUF)")
endif()

function(run step)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "package_consumer: ${step} failed (${rc})")
  endif()
endfunction()

# A fresh prefix each run: files left by an earlier install would hide one missing from this one.
file(REMOVE_RECURSE "${WORK_DIR}")
set(prefix "${WORK_DIR}/prefix")
run("install" ${CMAKE_COMMAND} --install "${BUILD_DIR}" --prefix "${prefix}"
    --component Development)

# The library was compiled with the sanitizers of its build; the consumer must link their runtime.
set(flags "")
if(SANITIZE)
  set(flags "-fsanitize=${SANITIZE}")
endif()
run("configure" ${CMAKE_COMMAND} -S "${CONSUMER_DIR}" -B "${WORK_DIR}/build" -G "${GENERATOR}"
    "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}" "-DCMAKE_BUILD_TYPE=${BUILD_TYPE}"
    "-DCMAKE_CXX_FLAGS=${flags}" "-DCMAKE_EXE_LINKER_FLAGS=${flags}"
    "-DCMAKE_PREFIX_PATH=${prefix}\;${LLAMA_PREFIX}" -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
    -DCMAKE_FIND_USE_SYSTEM_PACKAGE_REGISTRY=OFF)
# The package must come from this install, not from one elsewhere on the system.
file(STRINGS "${WORK_DIR}/build/CMakeCache.txt" found REGEX "^kvsteer_DIR:")
string(REGEX REPLACE "^[^=]*=" "" found "${found}")
string(FIND "${found}" "${prefix}/" at)
if(NOT at EQUAL 0)
  message(FATAL_ERROR "package_consumer: found kvsteer in '${found}', not under '${prefix}'")
endif()
run("build" ${CMAKE_COMMAND} --build "${WORK_DIR}/build")
run("run" "${WORK_DIR}/build/kvsteer_consumer" "${MODEL}" "${N_VOCAB}")
