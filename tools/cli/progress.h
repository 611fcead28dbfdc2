// A one-line progress bar with items/s and ETA on stderr (redrawn in place on a terminal,
// printed every 10 % otherwise).
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>

namespace kvsteer::cli {

class Progress {
 public:
  Progress(std::string label, std::size_t total);
  void update(std::size_t done);
  void finish();

 private:
  std::string label_;
  std::size_t total_;
  std::size_t last_decile_ = 0;
  bool tty_;
  bool finished_ = false;
  std::optional<std::size_t> first_done_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace kvsteer::cli
