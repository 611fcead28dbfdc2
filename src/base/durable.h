// Pieces of the library's "outputs appear whole or not at all" rule (kvsteer/file_io.h), shared
// by write_file_atomic and the vector-file writer.
#pragma once

#include <string>

namespace kvsteer::detail {

// A temporary path beside `path`, distinct for every call in every process
// (path + ".tmp.<pid>.<n>"): two threads saving the same path never share a temporary file.
std::string temporary_path_beside(const std::string& path);

// Flushes a written file's data to the disk (fsync). Renaming a file whose data is still only in
// the page cache over an old one can leave an empty file after a power loss. Throws Error(Io)
// naming `what` and the system's reason.
void sync_file(const std::string& path, const std::string& what);

// fsync of the folder holding path, so that a rename into it is durable. Best effort: some
// filesystems refuse fsync on folders, and the rename itself has already succeeded.
void sync_parent_folder(const std::string& path) noexcept;

// A file that appears whole or not at all: write tmp() (by path or FILE*, as
// gguf_write_to_file_ptr and llama_model_quantize need; write_file_atomic for a string), then
// commit() syncs it, renames it over path and syncs the folder. Destroyed without a commit (an
// error on the way), the temporary file is removed.
class AtomicFile {
 public:
  explicit AtomicFile(std::string path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  const std::string& tmp() const noexcept { return tmp_; }
  // Throws Error(Io) naming the path when the data cannot be synced or the rename fails.
  void commit();

 private:
  std::string path_;
  std::string tmp_;
  bool committed_ = false;
};

}  // namespace kvsteer::detail
