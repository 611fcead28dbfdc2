// The append-only JSON-lines files of resumable runs (items.jsonl, sweep journals).
#pragma once

#include <string>
#include <string_view>

namespace kvsteer::eval {

// Appends are whole or absent: each append is one write of complete lines, flushed to the disk
// (fdatasync) before it returns, and an append that fails part-way (a full disk) is cut back to
// the file's previous end. So a run killed at any point, or stopped by a full disk, leaves only
// whole lines, and the lines of earlier appends are never touched. Move-only.
class AppendFile {
 public:
  // Opens path for appending, creating it when missing. Throws Error(Io) naming path and the
  // system's reason.
  explicit AppendFile(std::string path);
  ~AppendFile();
  AppendFile(AppendFile&& other) noexcept;
  AppendFile& operator=(AppendFile&& other) noexcept;
  AppendFile(const AppendFile&) = delete;
  AppendFile& operator=(const AppendFile&) = delete;

  // Appends text (whole lines). Throws Error(Io) naming the path and the reason; the file then
  // ends where it ended before the call.
  void append(std::string_view text);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
};

}  // namespace kvsteer::eval
