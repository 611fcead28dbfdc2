#include "progress.h"

#include <unistd.h>
#include <cmath>

#include <cstdio>
#include <string>

namespace kvsteer::cli {

Progress::Progress(std::string label, std::size_t total)
    : label_(std::move(label)),
      total_(total),
      tty_(isatty(STDERR_FILENO) != 0),
      start_(std::chrono::steady_clock::now()) {}

void Progress::update(std::size_t done) {
  // The first update is the baseline: work done before it (resumed items, a batch that finished
  // before the bar existed) does not count towards the rate.
  if (!first_done_) {
    first_done_ = done;
    start_ = std::chrono::steady_clock::now();
  }
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const std::size_t since = done >= *first_done_ ? done - *first_done_ : 0;
  const double rate = secs > 0 ? static_cast<double>(since) / secs : 0.0;
  const double eta = rate > 0 ? static_cast<double>(total_ - done) / rate : 0.0;
  const std::size_t decile = total_ == 0 ? 10 : done * 10 / total_;
  if (!tty_ && decile == last_decile_ && done != total_) {
    return;
  }
  last_decile_ = decile;
  const int width = 30;
  const int filled = total_ == 0 ? width : static_cast<int>(width * done / total_);
  std::string bar(static_cast<std::size_t>(filled), '#');
  bar.resize(width, '.');
  // Before any work of this run is measured the rate is unknown, and so is the time left.
  const std::string eta_text =
      rate > 0 || done == total_ ? std::to_string(std::llround(eta)) + "s" : std::string("?");
  std::fprintf(stderr, "%s%s [%s] %zu/%zu  %.2f/s  ETA %s%s", tty_ ? "\r" : "", label_.c_str(),
               bar.c_str(), done, total_, rate, eta_text.c_str(), tty_ ? "" : "\n");
  std::fflush(stderr);
}

void Progress::finish() {
  if (finished_) {
    return;
  }
  finished_ = true;
  if (tty_) {
    std::fputc('\n', stderr);
  }
}

}  // namespace kvsteer::cli
