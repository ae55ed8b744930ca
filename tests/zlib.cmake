find_package(ZLIB REQUIRED)
target_link_libraries(lsgrad_tests PRIVATE ZLIB::ZLIB)
