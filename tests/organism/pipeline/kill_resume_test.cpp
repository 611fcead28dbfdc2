// Killed runs lose nothing: `kvsteer eval`, `kvsteer sweep` and `kvsteer organism train` on the
// organism are killed with SIGKILL at many points (before the first batch, inside batches, right
// after the last append and before the summary, at random times), resumed each time, and their
// final outputs must equal an uninterrupted run's byte for byte apart from the timing fields; after
// every kill the files on disk must be whole (config and summary parse, every journal line is a
// whole record, no item twice). Then the output folder on a full and on a read-only filesystem: one
// error line, the earlier results intact, and the run completes once there is space again.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "support/run_command.h"
#include "support/test_env.h"

extern char** environ;

namespace kvsteer {
namespace {

namespace fs = std::filesystem;
using nlohmann::ordered_json;

std::size_t count_lines(const std::string& path) {
  std::ifstream in(path);
  std::size_t n = 0;
  for (std::string line; std::getline(in, line);) ++n;
  return n;
}

// Drops timing fields (wall-clock measurements, different on every run) recursively.
ordered_json without_timing(ordered_json j) {
  if (j.is_object()) {
    for (const char* key : {"elapsed_s", "items_per_s", "ttft_ms", "mean_ttft_ms", "timing"})
      j.erase(key);
    for (auto& [key, value] : j.items()) value = without_timing(value);
  } else if (j.is_array()) {
    for (auto& value : j) value = without_timing(value);
  }
  return j;
}

// How an output is compared: JSON without its timing fields, JSON lines the same line by line, or
// the bytes of a binary file (a trained GGUF).
enum class Kind { Json, JsonLines, Bytes };

// A file as compared: one dump per JSON line (or one for a JSON file), or its bytes.
std::vector<std::string> comparable(const std::string& path, Kind kind) {
  if (kind == Kind::Bytes) return {test::read_file(path)};
  if (kind == Kind::Json)
    return {without_timing(ordered_json::parse(test::read_file(path))).dump()};
  std::vector<std::string> out;
  for (const std::string& line : test::read_lines(path)) {
    out.push_back(without_timing(ordered_json::parse(line)).dump());
  }
  return out;
}

// One command whose outputs are checked: the files it writes and how they are compared, the
// journal it appends to (watched for kill points; empty: kills at times only) and the file it
// writes last.
struct Job {
  std::string name;
  std::vector<std::string> argv;
  std::string out;                                  // the folder to clear between cycles
  std::vector<std::pair<std::string, Kind>> files;  // path, comparison
  std::string journal;
  std::string last_written;
};

// Where a run is killed.
// Tried in this order, so that the random-time kill follows an early one and finds work left.
enum class KillPoint {
  Early,        // 0-30 ms: model load, config.json's atomic write
  RandomTime,   // uniform over an uninterrupted run's duration
  AtLines,      // once the journal holds a chosen number of lines, plus 0-3 ms: inside a batch
  BeforeFinal,  // journal complete, final file not yet written: the last atomic write
};

struct Outcome {
  bool killed = false;
  int exit_code = -1;
};

class KillResume : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir();
    const std::string cli = test::cli_path();
    for (const auto& [split, n, file] :
         {std::tuple{"test", "24", "test.jsonl"}, std::tuple{"train", "40", "traces.jsonl"}}) {
      const auto r = test::run_command(
          {cli, "organism", "gen", "--split", split, "--n", n, "-s", "5", "-o", dir_->file(file)});
      ASSERT_EQ(r.exit_code, 0) << r.err;
    }
  }
  static void TearDownTestSuite() { delete dir_; }

  static std::vector<std::string> common(const std::string& sub) {
    return {test::cli_path(),
            sub,
            "-m",
            test::organism_model_path(),
            "--task",
            "organism-numeric",
            "--data",
            dir_->file("test.jsonl"),
            "--traces",
            dir_->file("traces.jsonl"),
            "--method",
            "cache",
            "--pairs",
            "16",
            "--shots",
            "3",
            "--n-predict",
            "48",
            "--parallel",
            "4",
            "-t",
            "1"};
  }

  static Job eval_job(const std::string& out) {
    Job j{"eval", common("eval"), out, {}, out + "/items.jsonl", out + "/summary.json"};
    j.argv.insert(j.argv.end(), {"-o", out});
    j.files = {{out + "/config.json", Kind::Json},
               {out + "/items.jsonl", Kind::JsonLines},
               {out + "/summary.json", Kind::Json}};
    return j;
  }

  static Job sweep_job(const std::string& out) {
    const std::string json = out + "/sweep.json";
    Job j{"sweep", common("sweep"), out, {}, json + ".items.jsonl", json};
    j.argv.insert(j.argv.end(), {"--cv-grid", "0,4", "-o", json});
    j.files = {{json, Kind::Json}, {json + ".items.jsonl", Kind::JsonLines}};
    return j;
  }

  // The organism trainer on a tiny shape: the mixture, tokenized records and random init are
  // prepared in the work folder, then checkpoints every 3 steps; always run with --resume, which
  // starts afresh when there is no checkpoint. One thread: the trainer is deterministic per
  // thread count.
  static Job train_job(const std::string& out) {
    const std::string model = out + "/trained.gguf";
    std::vector<std::string> argv{test::cli_path(), "organism", "train", "--work-dir",
                                  out + "/work",    "-o",       model};
    std::istringstream flags(
        "--n-train 240 --n-val 16 --max-shots 2 --n-layer 2 --n-embd 32 --n-head 2 --n-head-kv 1 "
        "--n-ff 64 --ctx 512 --batch 2 --warmup 2 --checkpoint-every 3 --eval-every 10 "
        "--log-every 1000 -t 1 --resume");
    for (std::string flag; flags >> flag;) argv.push_back(flag);
    return {"organism train", argv, out, {{model, Kind::Bytes}}, "", model};
  }

  // Starts the job, kills it at `point`, and reports whether it was killed or exited first.
  static Outcome run_once(const Job& job, KillPoint point, std::size_t lines, double delay_s,
                          std::mt19937& rng) {
    std::vector<char*> args;
    for (const auto& a : job.argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
    pid_t pid = -1;
    const int rc = posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    EXPECT_EQ(rc, 0) << "cannot start " << job.argv[0];
    const auto start = std::chrono::steady_clock::now();
    std::uniform_real_distribution<double> jitter_ms(0.0, 3.0);
    std::optional<std::chrono::steady_clock::time_point> fire;
    if (point == KillPoint::Early || point == KillPoint::RandomTime) {
      fire = start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                         std::chrono::duration<double>(delay_s));
    }
    for (;;) {
      int status = 0;
      if (waitpid(pid, &status, WNOHANG) == pid) {
        return {false, WIFEXITED(status) ? WEXITSTATUS(status) : -1};
      }
      const auto now = std::chrono::steady_clock::now();
      if (!fire) {
        const bool ready = point == KillPoint::AtLines
                               ? count_lines(job.journal) >= lines
                               : count_lines(job.journal) >= lines && !fs::exists(job.last_written);
        if (ready) {
          fire = now + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                           std::chrono::duration<double, std::milli>(jitter_ms(rng)));
        }
      }
      if (fire && now >= *fire) break;
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    // A run can finish in the instant before the signal lands.
    if (WIFEXITED(status)) return {false, WEXITSTATUS(status)};
    return {true, -1};
  }

  // What a kill may leave: whole JSON files, whole journal records, no record twice.
  static void check_state(const Job& job, int kill_no) {
    for (const auto& [path, kind] : job.files) {
      if (!fs::exists(path)) continue;
      if (kind == Kind::Bytes) continue;  // compared whole, below and at the end
      const std::vector<std::string> lines = test::read_lines(path);
      if (kind == Kind::Json) {
        EXPECT_TRUE(ordered_json::accept(test::read_file(path)))
            << path << " is torn after kill " << kill_no;
        continue;
      }
      std::set<std::pair<int, int>> seen;
      const std::string text = test::read_file(path);
      const bool torn_tail = !text.empty() && text.back() != '\n';
      for (std::size_t i = 0; i < lines.size(); ++i) {
        ordered_json j;
        try {
          j = ordered_json::parse(lines[i]);
        } catch (const std::exception& e) {
          // The kernel may cut a write short when a fatal signal arrives; the reader drops such
          // a tail, but nothing before it may be damaged.
          EXPECT_TRUE(torn_tail && i + 1 == lines.size())
              << path << " line " << i + 1 << " is torn after kill " << kill_no;
          continue;
        }
        if (!j.contains("index")) continue;  // the sweep journal's header
        const int setting = j.value("setting", 0);
        EXPECT_TRUE(seen.emplace(setting, j.at("index").get<int>()).second)
            << path << ": item " << j.at("index") << " of setting " << setting
            << " recorded twice after kill " << kill_no;
      }
    }
  }

  static void expect_same_outputs(const Job& job, const Job& reference, const std::string& when) {
    for (std::size_t f = 0; f < job.files.size(); ++f) {
      const auto& [path, kind] = job.files[f];
      ASSERT_TRUE(fs::exists(path)) << path << " missing " << when;
      EXPECT_EQ(comparable(path, kind), comparable(reference.files[f].first, kind))
          << path << " differs from the uninterrupted run " << when;
    }
  }

  // Kills `job` at `n_kills` points, resuming after each; whenever a run completes, its outputs
  // are compared with the reference and the next cycle starts from an empty folder.
  static void kill_and_resume(const Job& job, const Job& reference, int n_kills) {
    const auto t0 = std::chrono::steady_clock::now();
    const auto r = test::run_command(reference.argv);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const double duration =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const std::size_t total_lines = count_lines(reference.journal);
    if (reference.name == "eval") {
      // The reference's summary agrees with its items.
      const auto summary = ordered_json::parse(test::read_file(reference.last_written));
      int correct = 0;
      for (const auto& line : test::read_lines(reference.journal)) {
        correct += ordered_json::parse(line).at("correct").get<bool>() ? 1 : 0;
      }
      EXPECT_EQ(summary.at("n").get<std::size_t>(), total_lines);
      EXPECT_EQ(summary.at("correct").get<int>(), correct);
    }
    std::mt19937 rng(20240915u);
    int kills = 0, compared = 0, runs = 0;
    std::vector<int> by_point(4, 0);
    while (kills < n_kills) {
      // Without a journal only times can be chosen: early ones and any time of the run.
      const auto point = job.journal.empty()
                             ? (runs % 2 == 0 ? KillPoint::Early : KillPoint::RandomTime)
                             : static_cast<KillPoint>(runs % 4);
      ++runs;
      std::size_t lines = 0;
      double delay = 0.0;
      switch (point) {
        case KillPoint::Early:
          delay = std::uniform_real_distribution<double>(0.0, 0.03)(rng);
          break;
        case KillPoint::AtLines:
          // Before the first record (extraction or the first batch) up to the last batch.
          lines = std::uniform_int_distribution<std::size_t>(0, total_lines - 1)(rng);
          break;
        case KillPoint::BeforeFinal:
          lines = total_lines;
          break;
        case KillPoint::RandomTime:
          delay = std::uniform_real_distribution<double>(0.0, duration)(rng);
          break;
      }
      const Outcome o = run_once(job, point, lines, delay, rng);
      if (o.killed) {
        ++kills;
        ++by_point[static_cast<std::size_t>(point)];
        check_state(job, kills);
        // A binary output is written atomically: after any kill it is absent or final.
        for (std::size_t f = 0; f < job.files.size(); ++f) {
          const auto& [path, kind] = job.files[f];
          if (kind == Kind::Bytes && fs::exists(path)) {
            EXPECT_TRUE(test::read_file(path) == test::read_file(reference.files[f].first))
                << path << " is not the final model after kill " << kills;
          }
        }
        continue;
      }
      ASSERT_EQ(o.exit_code, 0) << job.name << " failed on a resume (run " << runs << ")";
      expect_same_outputs(job, reference, "after a run that completed");
      ++compared;
      fs::remove_all(job.out);
      fs::create_directories(job.out);
    }
    const auto done = test::run_command(job.argv);
    ASSERT_EQ(done.exit_code, 0) << done.err;
    expect_same_outputs(job, reference, "after the last resume");
    ++compared;
    std::printf(
        "[ kill/resume ] %s: %d kills (early %d, random time %d, inside batches %d, "
        "before the final write %d) in %d runs, %d completed outputs compared\n",
        job.name.c_str(), kills, by_point[0], by_point[1], by_point[2], by_point[3], runs,
        compared);
  }

  static test::TempDir* dir_;
};

test::TempDir* KillResume::dir_ = nullptr;

TEST_F(KillResume, EvalLosesNothing) {
  fs::create_directories(dir_->file("eval-ref"));
  fs::create_directories(dir_->file("eval"));
  kill_and_resume(eval_job(dir_->file("eval")), eval_job(dir_->file("eval-ref")), 24);
}

TEST_F(KillResume, SweepLosesNothing) {
  fs::create_directories(dir_->file("sweep-ref"));
  fs::create_directories(dir_->file("sweep"));
  kill_and_resume(sweep_job(dir_->file("sweep")), sweep_job(dir_->file("sweep-ref")), 24);
}

TEST_F(KillResume, OrganismTrainerLosesNothing) {
  fs::create_directories(dir_->file("train-ref"));
  fs::create_directories(dir_->file("train"));
  kill_and_resume(train_job(dir_->file("train")), train_job(dir_->file("train-ref")), 20);
}

// The output folder on a private tmpfs (a user and mount namespace, so no root is needed where
// unprivileged user namespaces are allowed): a run that fills it stops with one error line and
// leaves the records before it whole; a read-only folder is refused the same way; with space
// again the run completes and equals an uninterrupted one.
TEST_F(KillResume, FullOrReadOnlyFilesystemKeepsEarlierResults) {
  if (test::run_command({"unshare", "-rm", "true"}).exit_code != 0) {
    GTEST_SKIP() << "cannot make a private tmpfs: 'unshare -rm' is refused here (unprivileged "
                    "user namespaces are disabled, or util-linux's unshare is missing)";
  }
  const std::string mnt = dir_->file("mnt"), out = dir_->file("fs");
  fs::create_directories(mnt);
  fs::create_directories(out);
  Job job = eval_job(mnt + "/run");
  std::string cmd;
  for (const auto& a : job.argv) cmd += "'" + a + "' ";
  // Each step's exit code and stderr land in $out; every state is copied out of the tmpfs.
  const std::string script = R"(
set -u
mnt="$1"; out="$2"; shift 2
mount -t tmpfs -o size=512k tmpfs "$mnt" || exit 77
)" + cmd + R"(>/dev/null 2>&1 || exit 10
cp -r "$mnt/run" "$out/complete"
# The state a kill after the first batch leaves: its four records, no summary.
head -n 4 "$mnt/run/items.jsonl" > "$mnt/i" && mv "$mnt/i" "$mnt/run/items.jsonl"
rm "$mnt/run/summary.json"
cp -r "$mnt/run" "$out/partial"
dd if=/dev/zero of="$mnt/fill" bs=1k >/dev/null 2>&1
)" + cmd + R"(>/dev/null 2>"$out/full.err"; echo $? > "$out/full.rc"
cp -r "$mnt/run" "$out/after-full"
rm "$mnt/fill"
mount -o remount,ro "$mnt" && { )" +
                             cmd + R"(>/dev/null 2>"$out/ro.err"; echo $? > "$out/ro.rc"; }
mount -o remount,rw "$mnt" || exit 11
)" + cmd + R"(>/dev/null 2>&1; echo $? > "$out/resumed.rc"
cp -r "$mnt/run" "$out/resumed"
)";
  test::write_file(dir_->file("fs.sh"), script);
  const auto r = test::run_command({"unshare", "-rm", "sh", dir_->file("fs.sh"), mnt, out});
  if (r.exit_code == 77) GTEST_SKIP() << "tmpfs cannot be mounted in a user namespace here";
  ASSERT_EQ(r.exit_code, 0) << r.err;

  auto error_lines = [](const std::string& err) {
    std::vector<std::string> found;
    std::istringstream in(err);
    for (std::string line; std::getline(in, line);) {
      if (line.find("error") != std::string::npos) found.push_back(line);
    }
    return found;
  };
  const Job complete = eval_job(out + "/complete");
  // Full: exit 1, one error line with the reason, the earlier records untouched and whole.
  EXPECT_EQ(test::read_file(out + "/full.rc"), "1\n");
  const auto full = error_lines(test::read_file(out + "/full.err"));
  ASSERT_EQ(full.size(), 1u) << test::read_file(out + "/full.err");
  EXPECT_EQ(full[0].rfind("kvsteer: error: ", 0), 0u) << full[0];
  EXPECT_NE(full[0].find("No space left on device"), std::string::npos) << full[0];
  const auto kept = comparable(out + "/after-full/items.jsonl", Kind::JsonLines);
  const auto all = comparable(complete.files[1].first, Kind::JsonLines);
  ASSERT_GE(kept.size(), 4u);
  ASSERT_LT(kept.size(), all.size());
  for (std::size_t i = 0; i < kept.size(); ++i) EXPECT_EQ(kept[i], all[i]) << "record " << i;
  EXPECT_EQ(test::read_file(out + "/after-full/config.json"),
            test::read_file(out + "/partial/config.json"));
  EXPECT_FALSE(fs::exists(out + "/after-full/summary.json"));
  // Read-only (where the namespace may remount): exit 1, one error line, nothing changed.
  if (fs::exists(out + "/ro.rc")) {
    EXPECT_EQ(test::read_file(out + "/ro.rc"), "1\n");
    const auto ro = error_lines(test::read_file(out + "/ro.err"));
    ASSERT_EQ(ro.size(), 1u) << test::read_file(out + "/ro.err");
    EXPECT_NE(ro[0].find("Read-only file system"), std::string::npos) << ro[0];
  }
  // Space again: the resumed run completes and equals the uninterrupted one.
  EXPECT_EQ(test::read_file(out + "/resumed.rc"), "0\n");
  expect_same_outputs(eval_job(out + "/resumed"), complete, "after the disk was freed");
}

}  // namespace
}  // namespace kvsteer
