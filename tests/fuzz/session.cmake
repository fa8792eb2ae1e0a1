# fuzz_session: a whole client session against the real proxy code and an in-process fake
# MySQL server (tests/fuzz/fuzz_session.c). Included by tests/CMakeLists.txt when
# CREDPROXY_FUZZ is on; needs clang, and the libraries built with
# -fsanitize=fuzzer-no-link,address,undefined so libFuzzer sees their coverage.
#
#   CC=clang cmake -S . -B build-fuzz -DCREDPROXY_FUZZ=ON -DCREDPROXY_TESTS=ON \
#     -DCMAKE_C_FLAGS="-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer \
#                      -fno-sanitize-recover=undefined -DCREDPROXY_STRICT"
#   cmake --build build-fuzz -j2 --target fuzz_session
#   build-fuzz/tests/fuzz_session -max_total_time=600 -dict=tests/fuzz/session.dict \
#     /tmp/corpus tests/fuzz/corpus/fuzz_session
#
# ctest -L fuzz replays the committed corpus only (each file once, no fuzzing).
if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
  message(WARNING "fuzz_session needs clang (libFuzzer); not built with ${CMAKE_C_COMPILER_ID}")
  return()
endif()
add_executable(fuzz_session ${CMAKE_CURRENT_LIST_DIR}/fuzz_session.c)
target_compile_options(fuzz_session PRIVATE -fsanitize=fuzzer,address,undefined
                       -fno-omit-frame-pointer)
target_compile_definitions(fuzz_session PRIVATE CREDPROXY_STRICT)
target_link_options(fuzz_session PRIVATE -fsanitize=fuzzer,address,undefined)
target_link_libraries(fuzz_session credproxy_proxy credproxy_secrets credproxy_auth
                      credproxy_conf PkgConfig::LIBEVENT PkgConfig::OPENSSL PkgConfig::CJSON
                      Threads::Threads)
file(GLOB FUZZ_SESSION_CORPUS CONFIGURE_DEPENDS
     ${CMAKE_CURRENT_LIST_DIR}/corpus/fuzz_session/*)
add_test(NAME fuzz_session_corpus COMMAND fuzz_session ${FUZZ_SESSION_CORPUS})
set_tests_properties(fuzz_session_corpus PROPERTIES LABELS fuzz TIMEOUT 300)
