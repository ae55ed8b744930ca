# The downstream test: install, then build a separate project against the installed package.
add_test(NAME install.find_package_downstream
         COMMAND ${CMAKE_COMMAND} -DBUILD_DIR=${PROJECT_BINARY_DIR} -DSOURCE_DIR=${PROJECT_SOURCE_DIR}
                 -DWORK_DIR=${PROJECT_BINARY_DIR}/downstream -DGENERATOR=${CMAKE_GENERATOR}
                 -DCXX_COMPILER=${CMAKE_CXX_COMPILER}
                 -P ${PROJECT_SOURCE_DIR}/cmake/InstallTest.cmake)
set_tests_properties(install.find_package_downstream PROPERTIES TIMEOUT 600 RUN_SERIAL TRUE)
