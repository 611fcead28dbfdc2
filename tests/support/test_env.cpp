#include "support/test_env.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include "kvsteer/backend.h"

namespace kvsteer::test {

namespace {

// The environment variable, else the path configured at build time.
std::string configured(const char* name, const char* built_in) {
  const char* value = std::getenv(name);
  if (value != nullptr && *value != '\0') return value;
  if (*built_in != '\0') return built_in;
  ADD_FAILURE() << name << " is not configured: set it in the environment or configure with "
                << "make test (it passes the paths to CMake)";
  return {};
}

// Every model test needs libllama initialised once per process.
class BackendEnvironment : public ::testing::Environment {
 public:
  void SetUp() override { backend_ = std::make_unique<Backend>(LogLevel::Error); }
  void TearDown() override { backend_.reset(); }

 private:
  std::unique_ptr<Backend> backend_;
};
[[maybe_unused]] const auto* const kBackendEnv =
    ::testing::AddGlobalTestEnvironment(new BackendEnvironment);

}  // namespace

std::string required_env(const char* name) { return configured(name, ""); }

std::string stories_model_path() {
  return configured("KVSTEER_STORIES_GGUF", KVSTEER_STORIES_GGUF);
}

std::string smollm2_model_path() {
  return configured("KVSTEER_SMOLLM2_GGUF", KVSTEER_SMOLLM2_GGUF);
}

std::string tiny_model_path(const std::string& name) {
  return configured("KVSTEER_TEST_MODELS_DIR", KVSTEER_TEST_MODELS_DIR) + "/" + name;
}

std::string shared_dir() { return configured("KVSTEER_SHARED_DIR", KVSTEER_SHARED_DIR); }

std::string organism_model_path() {
  return configured("KVSTEER_ORGANISM_GGUF", KVSTEER_ORGANISM_GGUF);
}

std::string cli_path() { return configured("KVSTEER_CLI", KVSTEER_CLI); }

std::string llama_source_dir() {
  return configured("KVSTEER_LLAMA_SOURCE_DIR", KVSTEER_LLAMA_SOURCE_DIR);
}

TempDir::TempDir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "kvsteer-test-XXXXXX").string();
  if (mkdtemp(tmpl.data()) == nullptr) ADD_FAILURE() << "mkdtemp failed";
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> read_lines(const std::string& path) {
  std::vector<std::string> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

}  // namespace kvsteer::test
