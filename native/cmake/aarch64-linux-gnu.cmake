# CMake toolchain file: cross-compile native/ for 64-bit ARM Linux (Jetson Orin:
# Cortex-A78AE, ARMv8.2-A with NEON, dotprod and fp16) with Debian's
# g++-aarch64-linux-gnu. Usage:
#   cmake -S native -B native/build-aarch64 \
#         -DCMAKE_TOOLCHAIN_FILE=native/cmake/aarch64-linux-gnu.cmake -DSHOAL_TESTS=ON
# The binaries run on the device, or here under qemu-user:
#   qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu cortex-a76 native/build-aarch64/test-backend-ops
# (`make test-arm` does both). Override the tool prefix with -DSHOAL_CROSS_PREFIX=...
# and the sysroot with -DSHOAL_CROSS_SYSROOT=... for another toolchain.

set(CMAKE_SYSTEM_NAME Linux)
# native/CMakeLists.txt picks the NEON kernel files from CMAKE_SYSTEM_PROCESSOR.
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(SHOAL_CROSS_PREFIX "aarch64-linux-gnu-" CACHE STRING "Prefix of the cross tools (gcc, g++, ar, ...)")
set(SHOAL_CROSS_SYSROOT "/usr/aarch64-linux-gnu" CACHE PATH "Target root with libc and libstdc++ for aarch64")

set(CMAKE_C_COMPILER "${SHOAL_CROSS_PREFIX}gcc")
set(CMAKE_CXX_COMPILER "${SHOAL_CROSS_PREFIX}g++")
find_program(SHOAL_CROSS_AR NAMES "${SHOAL_CROSS_PREFIX}gcc-ar" "${SHOAL_CROSS_PREFIX}ar")
find_program(SHOAL_CROSS_RANLIB NAMES "${SHOAL_CROSS_PREFIX}gcc-ranlib" "${SHOAL_CROSS_PREFIX}ranlib")
if(SHOAL_CROSS_AR)
  set(CMAKE_AR "${SHOAL_CROSS_AR}" CACHE FILEPATH "" FORCE)
endif()
if(SHOAL_CROSS_RANLIB)
  set(CMAKE_RANLIB "${SHOAL_CROSS_RANLIB}" CACHE FILEPATH "" FORCE)
endif()

# Baseline ISA for everything except the per-ISA kernel files: plain ARMv8-A
# (NEON is architectural on AArch64). kernels-neon-dotprod.cpp gets
# -march=armv8.2-a+dotprod+fp16 from native/CMakeLists.txt and is only called
# when the CPU reports it at run time, so one binary serves every AArch64 CPU.
set(CMAKE_C_FLAGS_INIT "-march=armv8-a")
set(CMAKE_CXX_FLAGS_INIT "-march=armv8-a")

# Headers and libraries come from the target root; programs (cmake, python) from the host.
set(CMAKE_FIND_ROOT_PATH "${SHOAL_CROSS_SYSROOT}")
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# Let try_run()/ctest run target binaries through qemu when it is installed.
find_program(SHOAL_QEMU_AARCH64 qemu-aarch64)
if(SHOAL_QEMU_AARCH64 AND NOT CMAKE_CROSSCOMPILING_EMULATOR)
  set(CMAKE_CROSSCOMPILING_EMULATOR "${SHOAL_QEMU_AARCH64};-L;${SHOAL_CROSS_SYSROOT};-cpu;cortex-a76")
endif()
