// kvsteer: KV cache steering for GGUF models on llama.cpp.
#include <cstdio>
#include <exception>

#include "common.h"

namespace {

int run(int argc, char** argv) {
  CLI::App app{
      "kvsteer: steer language models by editing their KV cache once (Belitsky et al. 2025)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "kvsteer 0.1.0");
  kvsteer::cli::add_generate(app);
  kvsteer::cli::add_extract(app);
  kvsteer::cli::add_kv_dump(app);
  kvsteer::cli::add_info(app);
  kvsteer::cli::add_bench(app);
  kvsteer::cli::add_organism(app);
  kvsteer::cli::add_eval(app);
  kvsteer::cli::add_sweep(app);
  kvsteer::cli::add_diagnose(app);
  kvsteer::cli::add_report(app);
  kvsteer::cli::add_serve(app);
  {
    kvsteer::Backend backend(kvsteer::LogLevel::Silent);
    try {
      app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
      return app.exit(e);
    } catch (const CLI::CallForAllHelp& e) {
      return app.exit(e);
    } catch (const CLI::CallForVersion& e) {
      return app.exit(e);
    } catch (const CLI::ParseError& e) {
      std::fprintf(stderr, "kvsteer: error: %s (see --help)\n", e.what());
      return 2;
    }
  }
  return 0;
}

}  // namespace

// Exit codes: 0 success, 1 runtime error, 2 usage error (bad flag or argument value).
int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const kvsteer::Error& e) {
    std::fprintf(stderr, "kvsteer: error: %s\n", e.what());
    return e.code() == kvsteer::ErrorCode::InvalidArgument ? 2 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvsteer: error: %s\n", e.what());
    return 1;
  } catch (...) {
    std::fprintf(stderr, "kvsteer: error: unknown failure\n");
    return 1;
  }
}
