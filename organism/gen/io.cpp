#include "organism/gen/io.h"

#include "kvsteer/error.h"
#include "kvsteer/file_io.h"

namespace kvsteer::organism {

void write_text_atomic(const std::string& path, std::string_view text) {
  if (path.empty())
    throw Error(ErrorCode::InvalidArgument, "output path is empty; expected a file name");
  write_file_atomic(path, text);
}

void write_lines_atomic(const std::string& path, const std::vector<std::string>& lines) {
  size_t size = 0;
  for (const std::string& line : lines) size += line.size() + 1;
  std::string text;
  text.reserve(size);
  for (const std::string& line : lines) {
    text += line;
    text += '\n';
  }
  write_text_atomic(path, text);
}

}  // namespace kvsteer::organism
