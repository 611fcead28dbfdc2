// kvsteer-make-tiny-models: writes the small random-init GGUF models that kvsteer's model tests
// and benchmarks run on (see README.md in this folder).
//
// Exit status: 0 success, 1 runtime error, 2 usage error.

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "base/fnv1a64.h"
#include "kvsteer/error.h"
#include "llama.h"
#include "llama_log.h"
#include "model_writer.h"
#include "recipes.h"
#include "verify.h"
#include "vocab.h"

namespace kvsteer::tinymodel {
namespace {

namespace fs = std::filesystem;

struct Options {
  std::string out_dir;            // --out
  std::string vocab_dir;          // --vocab-dir: llama.cpp's models/ folder
  uint64_t seed = 42;             // --seed
  std::vector<std::string> only;  // --only
  bool bench_shapes = false;      // --bench-shapes
  bool verify = false;            // --verify
  bool force = false;             // --force
  bool list = false;              // --list
  bool verbose = false;           // --verbose
  int n_threads = 2;              // --threads
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::string recipe_names() {
  std::string names;
  for (const Recipe& r : all_recipes()) {
    names += (names.empty() ? "" : ", ") + r.name;
  }
  return names;
}

// The recipes to write: --only, else every default fixture (+ bench shapes with --bench-shapes);
// fixtures with a real vocabulary need --vocab-dir.
std::vector<const Recipe*> select(const Options& opt) {
  std::vector<const Recipe*> out;
  if (!opt.only.empty()) {
    const std::set<std::string> wanted(opt.only.begin(), opt.only.end());
    for (const std::string& name : wanted) {
      bool known = false;
      for (const Recipe& r : all_recipes()) {
        known = known || r.name == name;
      }
      if (!known) {
        throw Error(ErrorCode::InvalidArgument,
                    "--only: unknown fixture '" + name + "'; expected one of: " + recipe_names());
      }
    }
    for (const Recipe& r : all_recipes()) {
      if (wanted.count(r.name) != 0) {
        if (!r.vocab_file.empty() && opt.vocab_dir.empty()) {
          throw Error(ErrorCode::InvalidArgument,
                      "fixture '" + r.name + "' needs --vocab-dir (llama.cpp's models/ folder)");
        }
        out.push_back(&r);
      }
    }
    return out;
  }
  std::string skipped;
  for (const Recipe& r : all_recipes()) {
    if (r.bench && !opt.bench_shapes) {
      continue;
    }
    if (!r.vocab_file.empty() && opt.vocab_dir.empty()) {
      skipped += (skipped.empty() ? "" : ", ") + r.name;
      continue;
    }
    out.push_back(&r);
  }
  if (!skipped.empty()) {
    std::fprintf(stderr, "kvsteer-make-tiny-models: note: no --vocab-dir, skipping %s\n",
                 skipped.c_str());
  }
  return out;
}

void list_recipes() {
  for (const Recipe& r : all_recipes()) {
    std::printf("%-20s %s%s\n", r.name.c_str(), r.purpose.c_str(),
                r.bench ? " [--bench-shapes]" : "");
    for (const OutputFile& f : r.files) {
      std::printf("%-20s   %s\n", "", f.file_name.c_str());
    }
  }
}

struct Counts {
  int written = 0;
  int kept = 0;
};

// Writes the files of one recipe that are not up to date.
void make_recipe(const Recipe& r, const Options& opt, Counts& counts) {
  const std::string stamp = recipe_stamp(r, opt.seed, opt.vocab_dir);
  const uint64_t seed = base::fnv1a64(r.name + ":" + std::to_string(opt.seed));
  gguf_context_ptr meta;  // built on first use: copying a real vocabulary costs ~0.1 s
  std::vector<TensorSpec> plan;
  for (const OutputFile& f : r.files) {
    const std::string path = (fs::path(opt.out_dir) / f.file_name).string();
    if (!opt.force && is_up_to_date(path, stamp, f.type)) {
      std::printf("kept    %-30s (up to date)\n", f.file_name.c_str());
      ++counts.kept;
      continue;
    }
    const auto t0 = std::chrono::steady_clock::now();
    uint64_t size = 0;
    std::string what;
    if (f.quantized_copy) {
      const std::string src = (fs::path(opt.out_dir) / r.files[0].file_name).string();
      size = write_quantized_copy(src, path, f.type, opt.n_threads);
      what = "llama_model_quantize of " + r.files[0].file_name;
    } else {
      if (!meta) {
        meta = build_metadata(r, opt.vocab_dir);
        const gguf_context_ptr shape_meta = build_shape_metadata(r, vocab_size(r, meta.get()));
        plan = plan_tensors(r, shape_meta.get(), opt.verbose);
      }
      int64_t n_params = 0;
      for (const TensorSpec& t : plan) {
        n_params += t.n_elements();
      }
      size = write_model(path, meta.get(), plan, f.type, seed, stamp, opt.n_threads);
      char buf[64];
      std::snprintf(buf, sizeof(buf), "%zu tensors, %.3f M params", plan.size(),
                    static_cast<double>(n_params) / 1e6);
      what = buf;
    }
    std::printf("wrote   %-30s %8.2f MiB  %-5s %5.2f s  (%s)\n", f.file_name.c_str(),
                static_cast<double>(size) / (1024.0 * 1024.0), ggml_type_name(f.type),
                seconds_since(t0), what.c_str());
    std::fflush(stdout);
    ++counts.written;
  }
}

int run(const Options& opt) {
  if (opt.list) {
    list_recipes();
    return 0;
  }
  if (opt.out_dir.empty()) {
    throw Error(ErrorCode::InvalidArgument, "--out DIR is required");
  }
  if (!opt.vocab_dir.empty() && !fs::is_directory(opt.vocab_dir)) {
    throw Error(ErrorCode::InvalidArgument,
                "--vocab-dir '" + opt.vocab_dir +
                    "' is not a directory; expected llama.cpp's models/ folder with "
                    "ggml-vocab-*.gguf");
  }
  const std::vector<const Recipe*> recipes = select(opt);
  std::error_code ec;
  fs::create_directories(opt.out_dir, ec);
  if (ec) {
    throw Error(ErrorCode::Io, "cannot create --out '" + opt.out_dir + "': " + ec.message());
  }

  const auto t0 = std::chrono::steady_clock::now();
  Counts counts;
  for (const Recipe* r : recipes) {
    make_recipe(*r, opt, counts);
  }
  std::printf("%d written, %d kept in %s, %.2f s\n", counts.written, counts.kept,
              opt.out_dir.c_str(), seconds_since(t0));
  if (opt.verify) {
    const auto t1 = std::chrono::steady_clock::now();
    int n_verified = 0;
    for (const Recipe* r : recipes) {
      for (const OutputFile& f : r->files) {
        verify_model((fs::path(opt.out_dir) / f.file_name).string(), *r);
        ++n_verified;
      }
    }
    std::printf("%d verified, %.2f s\n", n_verified, seconds_since(t1));
  }
  return 0;
}

// Parses the flags into `opt`. Returns -1 to go on, else the exit status (0 for --help).
int parse_flags(int argc, char** argv, Options& opt) {
  CLI::App app{"Writes small random-init GGUF models for kvsteer's tests and benchmarks.",
               "kvsteer-make-tiny-models"};
  app.add_option("-o,--out", opt.out_dir, "Output directory (created if missing)");
  app.add_option("--vocab-dir", opt.vocab_dir,
                 "llama.cpp's models/ folder with ggml-vocab-*.gguf (for *vocab fixtures)");
  app.add_option("-s,--seed", opt.seed, "Seed of the random initialisation")->capture_default_str();
  app.add_option("--only", opt.only, "Write only these fixtures (comma-separated, see --list)")
      ->delimiter(',');
  app.add_flag("--bench-shapes", opt.bench_shapes, "Also write the large benchmark shapes");
  app.add_flag("--verify", opt.verify, "Load, tokenize and decode every selected file");
  app.add_flag("--force", opt.force, "Rewrite files even when they are up to date");
  app.add_flag("--list", opt.list, "List the fixtures and their files, then exit");
  app.add_option("-t,--threads", opt.n_threads, "Threads for initialisation and quantization")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  app.add_flag("-v,--verbose", opt.verbose, "Show libllama's log");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  return -1;
}

}  // namespace
}  // namespace kvsteer::tinymodel

int main(int argc, char** argv) {
  int rc = 1;
  try {
    kvsteer::tinymodel::Options opt;
    rc = kvsteer::tinymodel::parse_flags(argc, argv, opt);
    if (rc >= 0) {
      return rc;
    }
    kvsteer::tinymodel::install_llama_log(opt.verbose);
    llama_backend_init();
    try {
      rc = kvsteer::tinymodel::run(opt);
    } catch (...) {
      llama_backend_free();
      throw;
    }
    llama_backend_free();
  } catch (const kvsteer::Error& e) {
    std::fprintf(stderr, "kvsteer-make-tiny-models: error: %s\n", e.what());
    rc = e.code() == kvsteer::ErrorCode::InvalidArgument ? 2 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvsteer-make-tiny-models: error: %s\n", e.what());
    rc = 1;
  }
  return rc;
}
