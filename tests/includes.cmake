# The folder dependency rules of DESIGN.md (core includes nothing from ops/, nn/, cuda/, ...) and the
# public/internal header split: tests/check_includes.py names every offending include. python3 is
# installed by scripts/deps.sh; without it this one test is not defined.
find_package(Python3 COMPONENTS Interpreter)
if(Python3_Interpreter_FOUND)
  add_test(NAME include_arrows
           COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/check_includes.py ${PROJECT_SOURCE_DIR}
                   ${LSGRAD_INTERNAL_HEADERS})
endif()
