# The CPU-beside-GPU loss table that scripts/gpu_check.sh prints, checked on benchmark output whose
# table is known by hand (the GPU run itself happens only where a GPU is lent; see docs/gpu.md).
find_package(Python3 COMPONENTS Interpreter)
if(Python3_Interpreter_FOUND)
  add_test(NAME gpu_check_loss_table
           COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/scripts/test_loss_cpu_vs_gpu.py)
endif()
