# Installs this build into a scratch prefix, then configures, builds and runs tests/downstream
# against it with find_package(lsgrad), as a user would. Run by ctest (see tests/install.cmake).
foreach(var BUILD_DIR SOURCE_DIR WORK_DIR GENERATOR CXX_COMPILER)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "install_test.cmake needs -D${var}=...")
  endif()
endforeach()
file(REMOVE_RECURSE ${WORK_DIR})
set(prefix ${WORK_DIR}/prefix)

function(run step)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${step} failed (${rc}):\n${out}\n${err}")
  endif()
  message(STATUS "${step}: ok\n${out}")
endfunction()

run(install ${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix})
if(NOT EXISTS ${prefix}/include/lsgrad/lsgrad.h OR NOT EXISTS ${prefix}/include/lsgrad/core/tensor.h)
  message(FATAL_ERROR "headers were not installed under include/lsgrad/")
endif()
run(configure ${CMAKE_COMMAND} -S ${SOURCE_DIR}/tests/downstream -B ${WORK_DIR}/build -G ${GENERATOR}
    -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_BUILD_TYPE=Release
    # The package's compiler: a static library built by clang needs clang's OpenMP runtime.
    -DCMAKE_CXX_COMPILER=${CXX_COMPILER})
run(build ${CMAKE_COMMAND} --build ${WORK_DIR}/build)
run(run ${WORK_DIR}/build/downstream)
