// Paths and helpers shared by the test tiers. Paths come from ctest's environment
// (tests/CMakeLists.txt); a missing required path fails the test, it never skips it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kvsteer::test {

// Value of an environment variable the test needs; fails the current test (ADD_FAILURE) and
// returns "" when it is unset. The path getters below fall back to paths configured at build time.
std::string required_env(const char* name);

// stories260K converted to GGUF (scripts/setup_models.sh).
std::string stories_model_path();
// SmolLM2-135M-Instruct (Q4_1), fetched and verified by scripts/setup_models.sh.
std::string smollm2_model_path();
// A fixture written by kvsteer-make-tiny-models, e.g. "llama-f32.gguf".
std::string tiny_model_path(const std::string& name);
// ../shared next to the checkout.
std::string shared_dir();
// The project's trained reasoning organism (organism/model/organism.gguf).
std::string organism_model_path();

// The kvsteer CLI binary.
std::string cli_path();
// The llama.cpp source tree (vocabulary-only GGUFs in models/).
std::string llama_source_dir();

// A fresh temporary directory, removed when the object dies.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

std::string read_file(const std::string& path);
// The file's lines, without their newlines (a missing file: none).
std::vector<std::string> read_lines(const std::string& path);
void write_file(const std::string& path, const std::string& text);

}  // namespace kvsteer::test
