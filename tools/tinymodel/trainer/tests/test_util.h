// Shared helpers of the trainer tests: temporary folders, a tiny model and a toy language.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "dataset.h"
#include "random_init.h"
#include "run.h"
#include "toy_data.h"

namespace kvsteer::train::test {

// A fresh folder under the system temp dir, removed with its contents on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// 2 layers, n_embd 64, 4 query / 2 KV heads, n_ff 128, 320-token SPM vocab (~100 k params).
RandomInitSpec tiny_spec();

// Writes a tiny init model, toy training and validation data into `dir` and returns run options
// for them (ctx 64, batch 4, 1 thread, lr 3e-3, warmup 5).
RunOptions tiny_run(const TempDir& dir, int64_t n_steps);

}  // namespace kvsteer::train::test
