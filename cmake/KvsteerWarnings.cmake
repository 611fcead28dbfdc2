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
if(CMAKE_BUILD_TYPE STREQUAL "Debug")
  add_compile_definitions(KVSTEER_DEBUG_ASSERTS=1)
endif()
