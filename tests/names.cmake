# Every parameterised test prints its parameter readably (a PrintTo beside its case type): ctest
# shows "# GetParam() = <case name>", never "GetParam() = 72-byte object <...>".
add_test(NAME test_names_are_readable
         COMMAND sh -c "! '$<TARGET_FILE:lsgrad_tests>' --gtest_list_tests | grep -n 'byte object'")
