// Assertions for bugs (never for anything a user, a file or a request controls).
// KVSTEER_ASSERT is on in every build; KVSTEER_DASSERT only in Debug and sanitizer builds.
#pragma once

#include <cstdio>
#include <cstdlib>

#define KVSTEER_ASSERT(cond)                                                                    \
  do {                                                                                          \
    if (!(cond)) {                                                                              \
      std::fprintf(stderr, "%s:%d: kvsteer assertion failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                             \
    }                                                                                           \
  } while (0)

#if defined(KVSTEER_DEBUG_ASSERTS)
#define KVSTEER_DASSERT(cond) KVSTEER_ASSERT(cond)
#else
#define KVSTEER_DASSERT(cond) \
  do {                        \
  } while (0)
#endif
