# The multi-process tests of dist/ (built with MPI only): the same GoogleTest program launched by
# mpirun on 2 ranks and on 3 (an odd count), the dead-rank checks, and the MNIST example trained
# data-parallel against one process.
if(NOT LSGRAD_HAS_MPI)
  message(STATUS "lsgrad: the multi-process tests need MPI (LSGRAD_MPI): not built")
  return()
endif()
# Under AddressSanitizer, OpenMPI's own allocations at start-up are reported as leaks; they are
# not lsgrad's, so the sanitizer build runs these tests without leak detection.
set(lsgrad_mpi_env OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE OMPI_MCA_btl_vader_single_copy_mechanism=none
    OMPI_MCA_rmaps_base_oversubscribe=1 ASAN_OPTIONS=detect_leaks=0)
set(lsgrad_mpirun ${MPIEXEC_EXECUTABLE} --allow-run-as-root --oversubscribe)

add_executable(lsgrad_dist_tests dist/main.cpp dist/test_process_group.cpp dist/test_ddp.cpp)
target_link_libraries(lsgrad_dist_tests PRIVATE lsgrad::lsgrad GTest::gtest)
target_include_directories(lsgrad_dist_tests PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/dist)
foreach(np IN ITEMS 2 3)
  add_test(NAME dist_mpi_np${np} COMMAND ${lsgrad_mpirun} -np ${np} $<TARGET_FILE:lsgrad_dist_tests>)
  set_tests_properties(dist_mpi_np${np} PROPERTIES ENVIRONMENT "${lsgrad_mpi_env}" TIMEOUT 120 PROCESSORS 2)
endforeach()

add_executable(lsgrad_dead_rank dist/dead_rank.cpp)
target_link_libraries(lsgrad_dead_rank PRIVATE lsgrad::lsgrad)
# Builds that make only lsgrad_tests (scripts/portability.sh) still run every registered test.
add_dependencies(lsgrad_tests lsgrad_dist_tests lsgrad_dead_rank)
foreach(mode IN ITEMS kill abort)
  add_test(NAME dist_dead_rank_${mode}
           COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/scripts/dead_rank.sh ${MPIEXEC_EXECUTABLE}
                   $<TARGET_FILE:lsgrad_dead_rank> 2 ${mode})
  set_tests_properties(dist_dead_rank_${mode} PROPERTIES ENVIRONMENT "${lsgrad_mpi_env}" TIMEOUT 90 PROCESSORS 2)
endforeach()

if(LSGRAD_BUILD_EXAMPLES)
  add_test(NAME dist_mpi_mnist
           COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/scripts/dist_mnist.sh ${MPIEXEC_EXECUTABLE} $<TARGET_FILE:mnist>)
  set_tests_properties(dist_mpi_mnist PROPERTIES ENVIRONMENT "${lsgrad_mpi_env}" TIMEOUT 120 PROCESSORS 2
                                                 SKIP_RETURN_CODE 77)
endif()
