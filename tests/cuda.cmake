# CUDA builds only: the fused loss kernels must not spill registers or use local memory on the
# GPUs they are tuned for (sm_80, sm_90). scripts/check_cuda_resources.sh compiles cuda/loss.cu and
# cuda/linear_cross_entropy.cu for each with `nvcc --resource-usage`, prints the per-kernel table and
# fails on any spill.
if(LSGRAD_HAS_CUDA)
  add_test(NAME cuda_loss_kernels_resource_usage
           COMMAND ${PROJECT_SOURCE_DIR}/scripts/check_cuda_resources.sh ${CMAKE_CUDA_COMPILER}
                   ${PROJECT_SOURCE_DIR} ${LSGRAD_GEN_INCLUDE} 80 90)
  set_tests_properties(cuda_loss_kernels_resource_usage PROPERTIES LABELS cuda TIMEOUT 600)
endif()
