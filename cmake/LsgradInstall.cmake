# Installs lsgrad as a CMake package: find_package(lsgrad CONFIG REQUIRED) gives lsgrad::lsgrad.
include(CMakePackageConfigHelpers)

install(TARGETS lsgrad EXPORT lsgradTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
# The public headers only (see LSGRAD_INTERNAL_HEADERS in the top-level CMakeLists.txt).
foreach(header IN LISTS LSGRAD_PUBLIC_HEADERS)
  get_filename_component(dir ${header} DIRECTORY)
  install(FILES ${header} DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/lsgrad/${dir})
endforeach()
install(FILES ${LSGRAD_GEN_INCLUDE}/lsgrad/lsgrad.h ${LSGRAD_GEN_INCLUDE}/lsgrad/config.h
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/lsgrad)

set(LSGRAD_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/lsgrad)
install(EXPORT lsgradTargets NAMESPACE lsgrad:: DESTINATION ${LSGRAD_CMAKE_DIR})
configure_package_config_file(cmake/lsgradConfig.cmake.in
  ${PROJECT_BINARY_DIR}/lsgradConfig.cmake INSTALL_DESTINATION ${LSGRAD_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/lsgradConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/lsgradConfig.cmake ${PROJECT_BINARY_DIR}/lsgradConfigVersion.cmake
        DESTINATION ${LSGRAD_CMAKE_DIR})
