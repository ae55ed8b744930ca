# Resolves LSGRAD_CUDA (AUTO|ON|OFF) into LSGRAD_HAS_CUDA and enables the CUDA language when on.
include(CheckLanguage)
string(TOUPPER "${LSGRAD_CUDA}" _lsgrad_cuda)
set(LSGRAD_HAS_CUDA OFF)
if(_lsgrad_cuda STREQUAL "ON" OR _lsgrad_cuda STREQUAL "AUTO")
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      # Ampere and Hopper: the data-centre GPUs the fused loss kernels are tuned for.
      set(CMAKE_CUDA_ARCHITECTURES 80 90)
    endif()
    enable_language(CUDA)
    # CMake 3.25 does not know nvcc's C++20 flag (nvcc 12+ accepts it); without it a
    # target with CUDA_STANDARD 20 fails to generate.
    if(NOT CMAKE_CUDA20_STANDARD_COMPILE_OPTION)
      set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
      set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
    endif()
    find_package(CUDAToolkit REQUIRED)
    set(LSGRAD_HAS_CUDA ON)
  elseif(_lsgrad_cuda STREQUAL "ON")
    message(FATAL_ERROR "LSGRAD_CUDA=ON but no CUDA compiler was found (set CMAKE_CUDA_COMPILER)")
  endif()
elseif(NOT _lsgrad_cuda STREQUAL "OFF")
  message(FATAL_ERROR "LSGRAD_CUDA must be AUTO, ON or OFF, not '${LSGRAD_CUDA}'")
endif()
message(STATUS "lsgrad: CUDA backend ${LSGRAD_HAS_CUDA}")

function(lsgrad_configure_cuda_target target)
  set_target_properties(${target} PROPERTIES CUDA_STANDARD 20 CUDA_STANDARD_REQUIRED ON
                                             CUDA_SEPARABLE_COMPILATION OFF)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr -Xptxas=-warn-spills -lineinfo>)
  # Lets code built against lsgrad (the CUDA benchmarks) use the CUDA runtime it links.
  target_compile_definitions(${target} PUBLIC LSGRAD_WITH_CUDA=1)
  if(LSGRAD_STATIC_RUNTIME)
    target_link_libraries(${target} PUBLIC CUDA::cudart_static CUDA::cublas)
  else()
    target_link_libraries(${target} PUBLIC CUDA::cudart CUDA::cublas)
  endif()
endfunction()
