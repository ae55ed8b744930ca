# Cross-compiles lsgrad for 64-bit ARM Linux with Debian's GNU cross toolchain
# (g++-aarch64-linux-gnu), against the arm64 multiarch packages of its dependencies (zlib1g-dev:arm64,
# libgtest-dev:arm64; nlohmann-json3-dev is architecture-independent). Only the portable kernels are
# built: the x86 paths are compiled out. The programs run under qemu-user:
#   cmake -S . -B build/aarch64 -G Ninja -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake -DLSGRAD_CUDA=OFF
#   qemu-aarch64 -L /usr/aarch64-linux-gnu build/aarch64/tests/lsgrad_tests --gtest_filter='*Loss*'
# (scripts/portability.sh does all of this, installing what is missing).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)

# Libraries and package configs of the target (Debian multiarch lives under /usr/lib/aarch64-linux-gnu);
# programs (nvcc, python) of the host.
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu /usr)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)

# Test discovery runs the test program at build time, through the emulator; the multiarch library
# folder is on its library path so the arm64 zlib is found.
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64 -L /usr/aarch64-linux-gnu -E LD_LIBRARY_PATH=/usr/lib/aarch64-linux-gnu)
