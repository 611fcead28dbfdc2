# Warning and sanitizer flags shared by every kvsteer target.
function(kvsteer_add_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wshadow -Wcast-qual
                                           -Wmissing-declarations -Wnon-virtual-dtor)
  if(KVSTEER_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
  target_compile_features(${target} PRIVATE cxx_std_20)
endfunction()

if(KVSTEER_SANITIZE)
  add_compile_options(-fsanitize=${KVSTEER_SANITIZE} -fno-omit-frame-pointer
                      -fno-sanitize-recover=all)
  add_link_options(-fsanitize=${KVSTEER_SANITIZE})
  add_compile_definitions(KVSTEER_DEBUG_ASSERTS=1)
endif()
if(KVSTEER_BUILD_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "KVSTEER_BUILD_FUZZ needs clang (the fuzz preset uses clang++-14)")
  endif()
  # Coverage feedback for libFuzzer in every target; only the fuzz targets link its main.
  add_compile_options(-fsanitize=fuzzer-no-link)
endif()
if(CMAKE_BUILD_TYPE STREQUAL "Debug")
  add_compile_definitions(KVSTEER_DEBUG_ASSERTS=1)
endif()
