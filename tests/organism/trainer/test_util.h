// Shared helpers of the trainer tests: temporary folders, a tiny model and a toy language.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "organism/trainer/dataset.h"
#include "organism/trainer/random_init.h"
#include "organism/trainer/run.h"
#include "organism/trainer/toy_data.h"
#include "support/test_env.h"

namespace kvsteer::train::test {

// Temporary folders come from the project-wide test support (tests/support/test_env.h).
using TempDir = kvsteer::test::TempDir;

// 2 layers, n_embd 64, 4 query / 2 KV heads, n_ff 128, 320-token SPM vocab (~100 k params).
RandomInitSpec tiny_spec();

// Writes a tiny init model, toy training and validation data into `dir` and returns run options
// for them (ctx 64, batch 4, 1 thread, lr 3e-3, warmup 5).
RunOptions tiny_run(const TempDir& dir, int64_t n_steps);

}  // namespace kvsteer::train::test
