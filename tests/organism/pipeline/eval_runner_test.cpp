// The evaluation harness end to end on the trained organism: resume after a kill, sweep =
// separate runs, activation steering, and the refusals of bad inputs.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "eval/run_support.h"
#include "eval/runner.h"
#include "eval/scoring.h"
#include "kvsteer/backend.h"
#include "kvsteer/checkpoint_file.h"
#include "kvsteer/error.h"
#include "kvsteer/file_io.h"
#include "kvsteer/vector_file.h"
#include "organism/gen/commands.h"
#include "organism/pipeline/train.h"
#include "support/test_env.h"

namespace kvsteer {
namespace {

using nlohmann::ordered_json;

class EvalRunner : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_ = load_model(test::organism_model_path());
    dir_ = new test::TempDir();
    organism::GenOptions g;
    // The problems the organism was trained on (arithmetic only since v2).
    g.generator = organism::default_organism_options().mixture.generator;
    g.family = organism::default_organism_options().mixture.family;
    g.seed = 5;
    g.n = 24;
    g.split = organism::Split::Test;
    for (auto variant : {organism::Variant::Numeric, organism::Variant::Choice}) {
      g.variant = variant;
      const std::string v = variant == organism::Variant::Numeric ? "numeric" : "choice";
      g.split = organism::Split::Test;
      g.n = 24;
      organism::run_gen(g, dir_->file("test-" + v + ".jsonl"));
      g.split = organism::Split::Train;
      g.n = 60;
      organism::run_gen(g, dir_->file("traces-" + v + ".jsonl"));
    }
  }
  static void TearDownTestSuite() {
    delete dir_;
    model_.reset();
  }

  eval::EvalOptions options(const std::string& method, const std::string& variant = "numeric") {
    eval::EvalOptions o;
    o.task = eval::parse_task("organism-" + variant);
    o.data = dir_->file("test-" + variant + ".jsonl");
    o.method = eval::parse_method(method);
    o.traces = dir_->file("traces-" + variant + ".jsonl");
    o.n_pairs = 40;
    o.shots = 3;
    eval::apply_paper_preset(o, *model_, "organism");
    o.n_pairs = 40;
    o.shots = 3;
    o.steering.coef_v = 4.0f;
    o.generation.n_predict = 96;
    o.generation.stop_strings = eval::reference_stop_strings(*model_);
    o.n_parallel = 8;
    o.n_threads = 1;
    return o;
  }

  // run_eval over a folder that holds another configuration's answers.
  static void expect_refused_as_another_configuration(const eval::EvalOptions& o) {
    try {
      eval::run_eval(model_, o);
      FAIL() << "expected a refusal";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("another configuration"), std::string::npos) << e.what();
    }
  }

  static std::shared_ptr<const Model> model_;
  static test::TempDir* dir_;
};

std::shared_ptr<const Model> EvalRunner::model_;
test::TempDir* EvalRunner::dir_ = nullptr;

TEST_F(EvalRunner, ResumeAfterKillLosesNothingAndRecomputesNothing) {
  test::TempDir out;
  auto o = options("fewshot");
  o.out_dir = out.file("full");
  const ordered_json full = eval::run_eval(model_, o);
  const auto full_lines = test::read_lines(o.out_dir + "/items.jsonl");
  ASSERT_EQ(full_lines.size(), 24u);

  // A run killed while writing its second batch: 8 whole lines and a torn one, no summary.
  o.out_dir = out.file("killed");
  std::filesystem::create_directories(o.out_dir);
  std::filesystem::copy_file(out.file("full/config.json"), o.out_dir + "/config.json");
  std::string partial;
  for (int i = 0; i < 8; ++i) partial += full_lines[static_cast<std::size_t>(i)] + "\n";
  // Mark one finished item: a resumed run must keep it, not recompute it.
  auto marked = ordered_json::parse(full_lines[3]);
  marked["response"] = "SENTINEL kept from the first run";
  partial = partial.substr(0, partial.find(full_lines[3])) + marked.dump() + "\n" +
            partial.substr(partial.find(full_lines[3]) + full_lines[3].size() + 1);
  partial += full_lines[8].substr(0, full_lines[8].size() / 2);
  test::write_file(o.out_dir + "/items.jsonl", partial);

  const ordered_json resumed = eval::run_eval(model_, o);
  const auto resumed_lines = test::read_lines(o.out_dir + "/items.jsonl");
  ASSERT_EQ(resumed_lines.size(), 24u);
  std::map<std::size_t, ordered_json> by_index;
  for (const auto& l : resumed_lines) {
    const auto j = ordered_json::parse(l);
    by_index[j.at("index").get<std::size_t>()] = j;
  }
  ASSERT_EQ(by_index.size(), 24u);
  EXPECT_EQ(by_index.at(3).at("response"), "SENTINEL kept from the first run");
  for (std::size_t i = 0; i < 24; ++i) {
    if (i == 3) continue;
    const auto want = ordered_json::parse(full_lines[i]);
    EXPECT_EQ(by_index.at(want.at("index").get<std::size_t>()).at("response"), want.at("response"))
        << "item " << i;
  }
  EXPECT_EQ(resumed.at("n"), 24);
  EXPECT_TRUE(std::filesystem::exists(o.out_dir + "/summary.json"));
  // What the sums were computed with travels with the run (scripts/llama_isa.sh).
  EXPECT_EQ(resumed.at("engine_cpu_features"), Backend::cpu_features());
  // A finished run resumed again computes nothing and gives the same summary numbers.
  const ordered_json again = eval::run_eval(model_, o);
  EXPECT_EQ(again.at("correct"), resumed.at("correct"));
  EXPECT_EQ(again.at("lengths"), resumed.at("lengths"));
}

// A run's records kept without their texts (where prompts may not go) resume it on another
// machine: the numbers of the kept items count, the rest are answered as an uninterrupted run.
TEST_F(EvalRunner, ARunResumesFromRecordsWithoutTheirTexts) {
  test::TempDir out;
  auto o = options("cache");
  o.out_dir = out.file("full");
  const ordered_json full = eval::run_eval(model_, o);
  const auto full_lines = test::read_lines(o.out_dir + "/items.jsonl");
  ASSERT_EQ(full_lines.size(), 24u);

  o.out_dir = out.file("compact");
  std::filesystem::create_directories(o.out_dir);
  std::filesystem::copy_file(out.file("full/config.json"), o.out_dir + "/config.json");
  std::string kept;
  for (std::size_t i = 0; i < 12; ++i) {
    auto j = ordered_json::parse(full_lines[i]);
    j.erase("prompt");
    j.erase("response");
    kept += j.dump() + "\n";
  }
  test::write_file(o.out_dir + "/items.jsonl", kept);

  const ordered_json resumed = eval::run_eval(model_, o);
  for (const char* key : {"n", "correct", "accuracy", "reasoning_rate", "lengths", "forced"}) {
    EXPECT_EQ(resumed.at(key), full.at(key)) << key;
  }
  // Timing and throughput speak of each invocation's own work: the resumed run answered 12.
  EXPECT_EQ(full.at("timing").at("answered_here"), 24);
  EXPECT_EQ(resumed.at("timing").at("answered_here"), 12);
  for (const char* key : {"vector_s", "answers_s"}) {
    EXPECT_GT(full.at("timing").at(key).get<double>(), 0.0) << key;
  }
  // A numeric task reads its answer from the text: no extraction continuation.
  EXPECT_EQ(full.at("timing").at("answer_extraction_s").get<double>(), 0.0);
  EXPECT_LE(resumed.at("items_per_s").get<double>(),
            12.0 / resumed.at("elapsed_s").get<double>() + 0.01);
  const auto lines = test::read_lines(o.out_dir + "/items.jsonl");
  ASSERT_EQ(lines.size(), 24u);
  for (std::size_t i = 0; i < 24; ++i) {
    const auto j = ordered_json::parse(lines[i]);
    const auto want = ordered_json::parse(full_lines[j.at("index").get<std::size_t>()]);
    EXPECT_EQ(j.contains("response"), j.at("index").get<std::size_t>() >= 12) << "line " << i;
    if (j.contains("response")) {
      EXPECT_EQ(j.at("response"), want.at("response")) << "line " << i;
    }
  }

  // A record with one text and not the other is damaged, not compact.
  auto damaged = ordered_json::parse(full_lines[0]);
  damaged.erase("response");
  test::write_file(o.out_dir + "/items.jsonl", damaged.dump() + "\n");
  try {
    eval::run_eval(model_, o);
    FAIL() << "expected a refusal";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("line 1"), std::string::npos) << e.what();
  }
}

TEST_F(EvalRunner, FolderOfAnotherConfigurationIsRefused) {
  test::TempDir out;
  auto o = options("baseline");
  o.limit = 4;
  o.out_dir = out.path();
  eval::run_eval(model_, o);
  o.generation.n_predict = 50;
  expect_refused_as_another_configuration(o);
}

TEST_F(EvalRunner, ALargerLimitExtendsARunAndASmallerOneIsRefused) {
  test::TempDir out;
  auto o = options("baseline");
  o.out_dir = out.path();
  o.limit = 8;
  eval::run_eval(model_, o);
  // Mark a finished item: the extended run must keep it, not recompute it.
  auto lines = test::read_lines(o.out_dir + "/items.jsonl");
  ASSERT_EQ(lines.size(), 8u);
  auto marked = ordered_json::parse(lines[2]);
  marked["response"] = "SENTINEL kept from the first 8";
  lines[2] = marked.dump();
  std::string text;
  for (const auto& l : lines) text += l + "\n";
  test::write_file(o.out_dir + "/items.jsonl", text);

  o.limit = 16;
  // Killed as the extension starts: the folder must not hold a summary of the first 8 beside a
  // configuration of 16 (a study would read the run as finished).
  auto killed = o;
  killed.progress = [](std::size_t, std::size_t) { throw std::runtime_error("killed"); };
  EXPECT_THROW(eval::run_eval(model_, killed), std::runtime_error);
  EXPECT_EQ(ordered_json::parse(read_text_file(o.out_dir + "/config.json", "config")).at("limit"),
            16);
  EXPECT_FALSE(std::filesystem::exists(o.out_dir + "/summary.json"));
  const ordered_json extended = eval::run_eval(model_, o);
  EXPECT_EQ(extended.at("n"), 16);
  const auto extended_lines = test::read_lines(o.out_dir + "/items.jsonl");
  ASSERT_EQ(extended_lines.size(), 16u);
  EXPECT_EQ(ordered_json::parse(extended_lines[2]).at("response"),
            "SENTINEL kept from the first 8");
  EXPECT_EQ(ordered_json::parse(read_text_file(o.out_dir + "/config.json", "config")).at("limit"),
            16);
  // The new items are the file's next ones, answered as a fresh run of 16 answers them.
  test::TempDir fresh;
  auto f = o;
  f.out_dir = fresh.path();
  eval::run_eval(model_, f);
  const auto fresh_lines = test::read_lines(f.out_dir + "/items.jsonl");
  ASSERT_EQ(fresh_lines.size(), 16u);
  for (std::size_t i = 8; i < 16; ++i) {
    EXPECT_EQ(ordered_json::parse(extended_lines[i]).at("response"),
              ordered_json::parse(fresh_lines[i]).at("response"))
        << "item " << i;
  }

  o.limit = 0;  // all 24
  EXPECT_EQ(eval::run_eval(model_, o).at("n"), 24);
  o.limit = 12;
  try {
    eval::run_eval(model_, o);
    FAIL() << "expected a refusal";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("holds the answers of all items"), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("not lower it"), std::string::npos) << e.what();
  }
  EXPECT_EQ(test::read_lines(o.out_dir + "/items.jsonl").size(), 24u);
}

TEST_F(EvalRunner, FolderOfAnotherModelFileWithTheSameFingerprintIsRefused) {
  test::TempDir out;
  const std::string copy = out.file("organism-copy.gguf");
  std::filesystem::copy_file(test::organism_model_path(), copy);
  auto o = options("baseline");
  o.limit = 2;
  o.out_dir = out.file("run");
  o.model_path = copy;
  eval::run_eval(model_, o);
  eval::run_eval(model_, o);  // the same file resumes
  {
    // A retrained model: same architecture and vocabulary, other weights (its last byte).
    std::fstream f(copy, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(-1, std::ios::end);
    const char last = static_cast<char>(f.get());
    f.seekp(-1, std::ios::end);
    f.put(static_cast<char>(last ^ 0x01));
  }
  expect_refused_as_another_configuration(o);
}

// A vector file re-made at the same path (another extraction, another machine's rounding) is
// another configuration: its answers must not be mixed with the first vector's. Runs begun
// before kvsteer recorded the vector's content go on, and record it from then on.
TEST_F(EvalRunner, FolderOfAnotherVectorFileAtTheSamePathIsRefused) {
  test::TempDir out;
  const auto save_vector = [&](float value) {
    SteeringVector v;
    v.model = model_->fingerprint();
    v.info.n_pairs = 1;
    v.info.kv_type_k = "f16";
    for (std::int32_t il = 0; il < v.model.n_layer; ++il) {
      v.k.emplace_back(static_cast<std::size_t>(v.model.n_embd_k_gqa), 0.0f);
      v.v.emplace_back(static_cast<std::size_t>(v.model.n_embd_v_gqa), value);
    }
    save_steering_vector(out.file("v.gguf"), v);
  };
  save_vector(0.01f);
  auto o = options("cache");
  o.vector_path = out.file("v.gguf");
  o.limit = 2;
  o.out_dir = out.file("run");
  eval::run_eval(model_, o);
  const std::string config_path = o.out_dir + "/config.json";
  const auto recorded = ordered_json::parse(read_text_file(config_path, "config"));
  ASSERT_TRUE(recorded.contains("vector_file")) << recorded.dump();
  eval::run_eval(model_, o);  // the same vector resumes

  save_vector(0.02f);
  expect_refused_as_another_configuration(o);

  // A configuration written before vector_file existed: the run goes on and records it.
  save_vector(0.01f);
  auto old = recorded;
  old.erase("vector_file");
  test::write_file(config_path, old.dump(2) + "\n");
  o.limit = 4;
  EXPECT_EQ(eval::run_eval(model_, o).at("n"), 4);
  EXPECT_EQ(ordered_json::parse(read_text_file(config_path, "config")).at("vector_file"),
            recorded.at("vector_file"));
}

TEST_F(EvalRunner, OrganismChoiceIsScoredByItsOwnAnswerSentence) {
  test::TempDir out;
  auto o = options("fewshot", "choice");
  o.limit = 8;
  o.generation.n_predict = 128;
  o.out_dir = out.path();
  const ordered_json summary = eval::run_eval(model_, o);
  int own = 0;
  std::ifstream items(out.file("items.jsonl"));
  for (std::string line; std::getline(items, line);) {
    const auto item = nlohmann::json::parse(line);
    const std::string answer = eval::organism_choice_answer(item.at("response").get<std::string>());
    if (answer.empty()) continue;
    ++own;
    EXPECT_EQ(item.at("extracted"), answer) << item.at("response");
    EXPECT_FALSE(item.at("forced").get<bool>());
  }
  // Reasoned examples: the organism answers with the choice scan and its answer sentence.
  EXPECT_GE(own, 6);
  EXPECT_GE(summary.at("correct").get<int>(), 6) << summary.dump();
}

TEST_F(EvalRunner, SweepEqualsSeparateSingleSettingRuns) {
  test::TempDir out;
  eval::SweepOptions so;
  so.base = options("cache", "choice");
  so.base.limit = 12;
  so.base.n_parallel = 24;  // 12 items x 2 settings in one batch
  so.coef_k = {0.0f};
  so.coef_v = {0.0f, 6.0f};
  so.layers = {"1-"};
  const ordered_json sweep = eval::run_sweep(model_, so);
  ASSERT_EQ(sweep.at("settings").size(), 2u);
  for (std::size_t s = 0; s < 2; ++s) {
    auto o = options("cache", "choice");
    o.limit = 12;
    o.n_parallel = 12;
    o.steering.coef_v = so.coef_v[s];
    o.out_dir = out.file("single" + std::to_string(s));
    const ordered_json single = eval::run_eval(model_, o);
    EXPECT_EQ(sweep["settings"][s].at("correct"), single.at("correct")) << "c_v " << so.coef_v[s];
    EXPECT_EQ(sweep["settings"][s].at("mean_tokens"), single.at("mean_tokens"));
    EXPECT_EQ(sweep["settings"][s].at("reasoning_rate"), single.at("reasoning_rate"));
  }
}

TEST_F(EvalRunner, SweepResumesFromItsJournalAndRefusesAnotherGrid) {
  test::TempDir out;
  eval::SweepOptions so;
  so.base = options("cache", "choice");
  so.base.limit = 8;
  so.base.n_parallel = 4;  // 2 items x 2 settings per batch: four batches
  so.coef_v = {0.0f, 6.0f};
  so.out = out.file("sweep.json");
  const ordered_json full = eval::run_sweep(model_, so);
  const std::string journal = so.out + ".items.jsonl";
  const auto lines = test::read_lines(journal);
  ASSERT_EQ(lines.size(), 1u + 2u * 8u);  // the header, then one line per setting and item
  EXPECT_EQ(ordered_json::parse(lines[0]).at("kind"), "kvsteer-sweep-items");

  // Killed in the third batch: two whole batches, one setting of the next, and a torn line.
  std::filesystem::remove(so.out);
  {
    std::ofstream f(journal, std::ios::binary | std::ios::trunc);
    for (std::size_t i = 0; i < 1 + 4 + 4 + 2; ++i) f << lines[i] << "\n";
    f << lines[11].substr(0, lines[11].size() / 2);
  }
  const ordered_json resumed = eval::run_sweep(model_, so);
  ASSERT_EQ(resumed.at("settings").size(), 2u);
  for (std::size_t s = 0; s < 2; ++s) {
    for (const char* key : {"n", "correct", "mean_tokens", "reasoning_rate"}) {
      EXPECT_EQ(resumed["settings"][s].at(key), full["settings"][s].at(key)) << key << " " << s;
    }
  }
  EXPECT_EQ(test::read_lines(journal).size(),
            1u + 4u + 4u + 2u + 2u * 4u);  // torn line cut, rest added

  // Finished: a rerun computes nothing and writes the same results, also when the data file is
  // spelled relative to the current directory instead of absolute (make vs a shell).
  const std::size_t journalled = test::read_lines(journal).size();
  so.base.data = std::filesystem::relative(so.base.data).string();
  ASSERT_NE(so.base.data.front(), '/');
  const ordered_json again = eval::run_sweep(model_, so);
  EXPECT_EQ(again.at("settings"), resumed.at("settings"));
  EXPECT_EQ(test::read_lines(journal).size(), journalled);

  so.coef_v = {0.0f, 8.0f};
  try {
    eval::run_sweep(model_, so);
    FAIL() << "a journal of another grid was reused";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    EXPECT_NE(std::string(e.what()).find("another configuration (grid differ)"), std::string::npos)
        << e.what();
  }
}

// An activation-steering sweep reports progress in answers, batch by batch, and a resumed one
// starts from the answers its journal holds: a progress bar then measures only the answers
// decoded now (a setting takes tens of minutes on a real model; whole settings resumed from the
// journal must neither count as instant work nor hide the progress inside one).
TEST_F(EvalRunner, ActivationSweepProgressCountsAnswersAndStartsFromTheJournal) {
  test::TempDir out;
  eval::SweepOptions so;
  so.base = options("caa", "choice");
  so.base.limit = 4;
  so.base.n_parallel = 2;  // two batches per setting
  so.base.generation.n_predict = 16;
  so.caa_layers = {3};
  so.caa_coefs = {0.0f, 8.0f};
  so.out = out.file("caa.json");
  std::vector<std::pair<std::size_t, std::size_t>> calls;
  so.base.progress = [&calls](std::size_t done, std::size_t total) {
    calls.emplace_back(done, total);
  };
  const ordered_json full = eval::run_sweep(model_, so);
  using Calls = std::vector<std::pair<std::size_t, std::size_t>>;
  EXPECT_EQ(calls, (Calls{{0, 8}, {2, 8}, {4, 8}, {6, 8}, {8, 8}}));

  // Stopped after the first setting and one batch of the second.
  const std::string journal = so.out + ".items.jsonl";
  const auto lines = test::read_lines(journal);
  ASSERT_EQ(lines.size(), 1u + 8u);
  {
    std::ofstream f(journal, std::ios::binary | std::ios::trunc);
    for (std::size_t i = 0; i < 1 + 4 + 2; ++i) f << lines[i] << "\n";
  }
  std::filesystem::remove(so.out);
  calls.clear();
  const ordered_json resumed = eval::run_sweep(model_, so);
  EXPECT_EQ(calls, (Calls{{6, 8}, {8, 8}}));
  for (std::size_t s = 0; s < 2; ++s) {
    for (const char* key : {"n", "correct", "mean_tokens", "reasoning_rate"}) {
      EXPECT_EQ(resumed["settings"][s].at(key), full["settings"][s].at(key)) << key << " " << s;
    }
  }
}

// The forced choice re-tokenizes prompt and response text (as the reference does), which can hold
// more tokens than one sequence's cells (a steered model's degenerate text re-tokenizes longer
// than it was generated). Such an input is scored in a session of its own, with the same control
// vector, and gives the logits a session large enough gives; it used to stop the whole run
// ("sequence 1 would hold 841 tokens, more than the context (768)").
TEST_F(EvalRunner, ForcedChoiceInputLongerThanASequenceIsScoredWhole) {
  auto o = options("baseline", "choice");
  o.engine.kv_streams = KvStreams::PerSequence;
  o.engine.type_k = KvType::F32;
  o.engine.type_v = KvType::F32;
  o.engine.flash_attn = FlashAttn::Off;
  eval::Evaluator ev(model_, o);
  Session narrow = ev.make_session(2, false, 64);
  std::vector<Token> tokens;
  while (tokens.size() <= narrow.n_ctx_seq()) {
    const auto& prompt = ev.prompt_tokens(tokens.size() % ev.items().size());
    tokens.insert(tokens.end(), prompt.begin(), prompt.end());
  }
  ASSERT_GT(tokens.size(), narrow.n_ctx_seq());
  narrow.decode(1, ev.prompt_tokens(0));  // the sequence holds a generation, as in a batch

  const auto reference = [&](const std::function<void(Session&)>& steer) {
    Session large = ev.make_session(1, false, static_cast<std::uint32_t>(tokens.size() + 300));
    if (steer) steer(large);
    large.decode(0, tokens, true);
    const auto logits = large.logits(0);
    return std::vector<float>(logits.begin(), logits.end());
  };
  EXPECT_EQ(ev.logits_after(narrow, 1, tokens, nullptr), reference(nullptr));

  std::vector<std::vector<float>> directions(static_cast<std::size_t>(model_->n_layer()));
  directions[3].assign(static_cast<std::size_t>(model_->fingerprint().n_embd), 0.5f);
  const auto steer = [&directions](Session& s) { s.set_control_vector(directions, 3, 3); };
  steer(narrow);
  const std::vector<float> steered = ev.logits_after(narrow, 1, tokens, steer);
  EXPECT_EQ(steered, reference(steer));
  EXPECT_NE(steered, reference(nullptr));

  // An input that fits is decoded in the sequence itself, as before.
  const std::vector<Token> fits(tokens.begin(), tokens.begin() + 40);
  narrow.clear_control_vector();
  const std::vector<float> in_place = ev.logits_after(narrow, 1, fits, nullptr);
  Session alone = ev.make_session(1, false, 64);
  alone.decode(0, fits, true);
  const auto expected = alone.logits(0);
  EXPECT_EQ(in_place, std::vector<float>(expected.begin(), expected.end()));
}

TEST_F(EvalRunner, ZeroCoefficientCacheSteeringEqualsBaselineWithOffset) {
  test::TempDir out;
  auto steer = options("cache", "choice");
  steer.limit = 8;
  steer.steering.coef_v = 0.0f;
  steer.out_dir = out.file("steer");
  const auto a = eval::run_eval(model_, steer);
  // The baseline with the same offset token, by hand: the responses must agree token for token.
  auto items = test::read_lines(out.file("steer/items.jsonl"));
  ASSERT_EQ(items.size(), 8u);
  for (const auto& l : items) {
    const auto j = ordered_json::parse(l);
    EXPECT_EQ(j.at("response").get<std::string>().substr(0, 1), "\n") << "offset token first";
  }
  EXPECT_EQ(a.at("n"), 8);
}

TEST_F(EvalRunner, ActivationSteeringChangesOutputsAndZeroCoefficientDoesNot) {
  test::TempDir out;
  auto base = options("baseline");
  base.limit = 8;
  base.out_dir = out.file("base");
  const auto b = eval::run_eval(model_, base);
  auto zero = options("caa");
  zero.limit = 8;
  zero.caa = {3, -1, 0.0f};
  zero.out_dir = out.file("zero");
  const auto z = eval::run_eval(model_, zero);
  EXPECT_EQ(z.at("lengths"), b.at("lengths"));
  EXPECT_EQ(z.at("correct"), b.at("correct"));
  auto strong = options("caa");
  strong.limit = 8;
  strong.caa = {3, -1, 8.0f};
  strong.out_dir = out.file("strong");
  eval::run_eval(model_, strong);
  const auto base_lines = test::read_lines(out.file("base/items.jsonl"));
  const auto strong_lines = test::read_lines(out.file("strong/items.jsonl"));
  int differ = 0;
  for (std::size_t i = 0; i < base_lines.size(); ++i) {
    differ += ordered_json::parse(base_lines[i]).at("response") !=
              ordered_json::parse(strong_lines[i]).at("response");
  }
  EXPECT_GT(differ, 0);
}

// Directions kept in --caa-cache are found again by the next run of the same pairs and give its
// answers bit for bit; a damaged file is extracted again and replaced.
TEST_F(EvalRunner, ActivationDirectionsAreKeptAndFoundAgain) {
  test::TempDir out;
  const auto responses = [](const std::string& dir) {
    std::vector<std::string> r;
    for (const auto& l : test::read_lines(dir + "/items.jsonl")) {
      r.push_back(ordered_json::parse(l).at("response").get<std::string>());
    }
    return r;
  };
  auto o = options("caa");
  o.limit = 8;
  o.caa = {3, -1, 8.0f};
  o.out_dir = out.file("plain");
  eval::run_eval(model_, o);
  o.caa_cache_dir = out.file("caa");
  o.out_dir = out.file("first");
  eval::run_eval(model_, o);
  EXPECT_EQ(responses(out.file("first")), responses(out.file("plain")));
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(out.file("caa"))) {
    files.push_back(e.path().string());
  }
  ASSERT_EQ(files.size(), 1u);

  // The kept file is what the next run uses: with its directions zeroed, the run is unsteered.
  auto kept = ordered_json::parse(read_text_file(files[0], "directions"));
  const ordered_json original = kept;
  for (auto& row : kept.at("directions")) {
    for (auto& x : row) x = 0.0;
  }
  test::write_file(files[0], kept.dump());
  o.out_dir = out.file("zeroed");
  eval::run_eval(model_, o);
  auto base = options("baseline");
  base.limit = 8;
  base.out_dir = out.file("base");
  eval::run_eval(model_, base);
  EXPECT_EQ(responses(out.file("zeroed")), responses(out.file("base")));

  // Restored, it gives the extracted directions' answers; damaged, it is made again.
  test::write_file(files[0], original.dump());
  o.out_dir = out.file("again");
  eval::run_eval(model_, o);
  EXPECT_EQ(responses(out.file("again")), responses(out.file("plain")));
  test::write_file(files[0], original.dump().substr(0, 100));
  o.out_dir = out.file("damaged");
  eval::run_eval(model_, o);
  EXPECT_EQ(responses(out.file("damaged")), responses(out.file("plain")));
  EXPECT_EQ(ordered_json::parse(read_text_file(files[0], "directions")), original);
}

// An activation-direction extraction stopped midway goes on from the checkpoint kept beside its
// file in --caa-cache and ends in the directions an uninterrupted extraction writes, bit for bit;
// a damaged checkpoint is reported and the extraction starts over.
TEST_F(EvalRunner, StoppedActivationExtractionGoesOnFromItsCheckpoint) {
  test::TempDir out;
  auto o = options("caa");
  o.limit = 2;
  o.caa = {3, -1, 8.0f};
  const auto only_file = [](const std::string& dir, const std::string& ending) {
    std::vector<std::string> found;
    for (const auto& e : std::filesystem::directory_iterator(dir)) {
      const std::string name = e.path().string();
      if (name.size() >= ending.size() &&
          name.compare(name.size() - ending.size(), ending.size(), ending) == 0) {
        found.push_back(name);
      }
    }
    EXPECT_EQ(found.size(), 1u) << dir << " *" << ending;
    return found.empty() ? std::string() : found.front();
  };
  o.caa_cache_dir = out.file("whole");
  o.out_dir = out.file("whole-run");
  eval::run_eval(model_, o);
  const std::string whole = read_text_file(only_file(out.file("whole"), ".json"), "directions");

  std::vector<std::string> notices;
  o.notice = [&](const std::string& text) { notices.push_back(text); };
  o.caa_cache_dir = out.file("stopped");
  o.caa_checkpoint_every_s = 0;
  o.out_dir = out.file("stopped-run");
  o.extraction_progress = [](std::size_t done, std::size_t) {
    if (done == 3) throw std::runtime_error("stopped");
  };
  EXPECT_THROW(eval::run_eval(model_, o), std::runtime_error);
  const std::string partial = only_file(out.file("stopped"), ".json.partial");
  EXPECT_EQ(load_residual_checkpoint(partial).pairs_done, 3u);
  std::vector<std::size_t> decoded;
  o.extraction_progress = [&](std::size_t done, std::size_t) { decoded.push_back(done); };
  eval::run_eval(model_, o);
  ASSERT_EQ(notices.size(), 1u);
  EXPECT_NE(notices[0].find("resuming the activation directions from " + partial +
                            ": 3 of 40 pairs done"),
            std::string::npos)
      << notices[0];
  EXPECT_EQ(decoded.front(), 3u) << "the resumed extraction decoded the checkpoint's pairs again";
  EXPECT_FALSE(std::filesystem::exists(partial));
  EXPECT_EQ(read_text_file(only_file(out.file("stopped"), ".json"), "directions"), whole);

  // A damaged checkpoint: said, and a whole extraction in its place.
  o.caa_cache_dir = out.file("damaged");
  o.out_dir = out.file("damaged-run");
  o.extraction_progress = [](std::size_t done, std::size_t) {
    if (done == 2) throw std::runtime_error("stopped");
  };
  EXPECT_THROW(eval::run_eval(model_, o), std::runtime_error);
  const std::string damaged = only_file(out.file("damaged"), ".json.partial");
  std::string bytes = test::read_file(damaged);
  bytes[bytes.size() / 2] ^= 0x40;
  test::write_file(damaged, bytes);
  notices.clear();
  decoded.clear();
  o.extraction_progress = [&](std::size_t done, std::size_t) { decoded.push_back(done); };
  eval::run_eval(model_, o);
  ASSERT_EQ(notices.size(), 1u);
  EXPECT_NE(notices[0].find("checksum mismatch"), std::string::npos) << notices[0];
  EXPECT_NE(notices[0].find("starting over"), std::string::npos) << notices[0];
  EXPECT_EQ(decoded.front(), 0u);
  EXPECT_EQ(read_text_file(only_file(out.file("damaged"), ".json"), "directions"), whole);
}

// Refused before anything is written: a failed run leaves no folder whose configuration would
// refuse the corrected run, and nothing is extracted for an hour before a bad flag is noticed.
TEST_F(EvalRunner, BadInputsAreRefusedWithClearErrors) {
  test::TempDir out;
  auto expect_error = [&](eval::EvalOptions o, const std::string& needle) {
    o.out_dir = out.file("bad");
    try {
      eval::run_eval(model_, o);
      ADD_FAILURE() << "expected an error containing '" << needle << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
    EXPECT_FALSE(std::filesystem::exists(out.file("bad"))) << needle << ": a folder was written";
    std::filesystem::remove_all(out.file("bad"));
  };
  auto o = options("fewshot");
  o.traces.clear();
  expect_error(o, "--traces");
  o = options("fewshot");
  test::write_file(out.file("empty.jsonl"), "");
  o.traces = out.file("empty.jsonl");
  expect_error(o, "no rows");
  o = options("fewshot");
  o.shots = 100;
  expect_error(o, "shots 100");
  o = options("cache");
  o.shots = 40;
  expect_error(o, "shots 40");
  o = options("baseline");
  o.task = eval::Task::Gsm8k;
  expect_error(o, "gsm8k");
  o = options("baseline", "numeric");
  o.task = eval::Task::OrganismChoice;
  expect_error(o, "numeric");
  o = options("caa");
  o.caa = {0, -1, 1.0f};
  expect_error(o, "layer 0");
  o = options("caa");
  o.caa = {6, -1, 1.0f};  // the organism has blocks 0..5
  expect_error(o, "1 <= first <= last < 6");
  o = options("cache");
  o.generation.n_predict = 0;
  expect_error(o, "--n-predict must be >= 1");
  o = options("cache");
  o.steering.layers_v = LayerSelection::parse("6-");
  expect_error(o, "the V layer selection '6-' selects no layer: the model has 6 layers");
  o = options("cache");
  o.steering.layers_v = LayerSelection::parse("2,7");
  expect_error(o, "layer 7 does not exist");
  o = options("cache");
  o.n_pairs = 61;  // the traces file has 60 rows
  expect_error(o, "60 rows, fewer than n_pairs 61");
  o = options("cache+cot");
  o.n_pairs = 0;
  expect_error(o, "n_pairs must be >= 1");
  EXPECT_THROW(eval::parse_method("steer"), Error);
  test::write_file(out.file("a-file"), "x");
  o = options("baseline");
  o.out_dir = out.file("a-file/run");
  try {
    eval::run_eval(model_, o);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "output folder '" + o.out_dir + "': '" + out.file("a-file") +
                                         "' is a file, not a folder");
  }

  // A sweep checks every setting of its grid before it opens its journal.
  eval::SweepOptions so;
  so.base = options("cache");
  so.coef_v = {1.0f, 2.0f};
  so.layers = {"1-", "9-"};
  so.out = out.file("sweep.json");
  try {
    eval::run_sweep(model_, so);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'9-' selects no layer"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(std::filesystem::exists(so.out + ".items.jsonl"));
  so.layers = {"1-"};
  so.out = out.path();
  try {
    eval::run_sweep(model_, so);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()),
              "sweep output '" + out.path() + "' is a directory, not a file");
  }
  so.out = out.file("sweep.json");
  so.base = options("caa");
  so.caa_layers = {2, 0};
  so.caa_coefs = {1.0f};
  EXPECT_THROW(eval::run_sweep(model_, so), Error);
  EXPECT_FALSE(std::filesystem::exists(so.out + ".items.jsonl"));
}

// A cache-steering setting asked of another method would be ignored: the run would be labelled
// by its method, yet its caller believes it steered.
TEST_F(EvalRunner, CacheSteeringSettingsAskedOfAnotherMethodAreRefused) {
  eval::EvalRequest r;
  r.task = "organism-numeric";
  r.data = dir_->file("test-numeric.jsonl");
  r.model_name = "organism";
  const auto refusal = [&](eval::EvalRequest req) -> std::string {
    try {
      (void)eval::make_eval_options(req, *model_);
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
      return e.what();
    }
    return "";
  };
  for (const char* method : {"baseline", "cot", "fewshot", "caa"}) {
    r.method = method;
    EXPECT_EQ(refusal(r), "") << method;
    auto with = r;
    with.c_v = 4.0f;
    EXPECT_EQ(refusal(with), std::string("c_v (--cv) applies to cache steering (method cache or "
                                         "cache+cot), not to method ") +
                                 method);
    with = r;
    with.vector = dir_->file("v.gguf");
    EXPECT_NE(refusal(with).find("a steering vector (--vector) applies"), std::string::npos);
    with = r;
    with.offset = "none";
    EXPECT_NE(refusal(with).find("the offset token (--offset) applies"), std::string::npos);
  }
  for (const char* method : {"cache", "cache+cot"}) {
    r.method = method;
    r.c_v = 4.0f;
    r.c_k = 0.5f;
    r.layers = "2-";
    r.offset = "none";
    EXPECT_EQ(refusal(r), "") << method;
  }
}

TEST(EvalScoring, WilsonIntervalAndReasoningSteps) {
  const auto [lo, hi] = eval::wilson_interval(50, 100);
  EXPECT_NEAR(lo, 40.38, 0.01);
  EXPECT_NEAR(hi, 59.62, 0.01);
  EXPECT_EQ(eval::wilson_interval(0, 0).first, 0.0);
  EXPECT_EQ(eval::count_reasoning_steps(eval::Task::OrganismNumeric,
                                        "3 + 4 = 7. 7 - 2 = 5. The answer is 5."),
            2);
  EXPECT_EQ(eval::count_reasoning_steps(eval::Task::OrganismNumeric, " The answer is 5."), 0);
  EXPECT_EQ(
      eval::count_reasoning_steps(
          eval::Task::Arc, "Plants need light. Light drives photosynthesis. The answer is B."),
      2);
  EXPECT_EQ(eval::count_reasoning_steps(eval::Task::Arc, " The answer is B."), 0);
  EXPECT_EQ(eval::count_reasoning_steps(eval::Task::Gsm8k, "He has 3. Then 5 more. 8"), 2);
}

TEST_F(EvalRunner, DiagnosisMeasuresTheEditAndAZeroEditChangesNothing) {
  test::TempDir out;
  eval::DiagnoseOptions d;
  d.base = options("cache");
  d.base.limit = 4;
  d.n_follow = 4;
  d.scales = {0.0f, 8.0f};
  d.per_layer = true;
  d.out = out.file("diag.json");
  const ordered_json r = eval::run_diagnosis(model_, d);
  EXPECT_EQ(r.at("n_prompts"), 4);
  EXPECT_LT(r.at("attention_recompute_error").get<double>(), 1e-2);
  const int n_layer = model_->fingerprint().n_layer;
  ASSERT_EQ(r.at("layers").size(), static_cast<std::size_t>(n_layer));
  EXPECT_EQ(r.at("layers")[0].at("v_edit_ratio"), 0.0) << "layer 0 is not steered";
  EXPECT_GT(r.at("layers")[1].at("v_edit_ratio").get<double>(), 0.0);
  EXPECT_EQ(r.at("layers")[1].at("heads").size(),
            static_cast<std::size_t>(model_->fingerprint().n_head));
  // Scale 0 is the unsteered model: no KL, no changed output, no V share.
  const auto& zero = r.at("scales")[0];
  EXPECT_EQ(zero.at("scale"), 0.0);
  EXPECT_LT(zero.at("kl_first").get<double>(), 1e-9);
  EXPECT_EQ(zero.at("diverged_share"), 0.0);
  EXPECT_EQ(zero.at("v_share_tail"), 0.0);
  // A large coefficient moves the next-token distribution more than the base one.
  EXPECT_GT(r.at("scales")[1].at("kl_first").get<double>(),
            r.at("effect").at("kl_first").get<double>());
  EXPECT_EQ(r.at("per_layer").size(), static_cast<std::size_t>(n_layer - 1));
  EXPECT_EQ(ordered_json::parse(test::read_file(d.out)), r);

  d.base = options("baseline");
  EXPECT_THROW(eval::run_diagnosis(model_, d), Error);
  d.base = options("cache");
  d.n_follow = 0;
  EXPECT_THROW(eval::run_diagnosis(model_, d), Error);
}

// Responses of a run, in item order.
std::vector<std::string> responses_of(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& l : test::read_lines(dir + "/items.jsonl"))
    out.push_back(ordered_json::parse(l).at("response").get<std::string>());
  return out;
}

TEST_F(EvalRunner, PerSequenceStreamsGiveTheUnifiedCachesAnswersAndAreRecorded) {
  // Cache steering (edits after a shared prefill), 8 items x 1 setting in one batch of 8: with an
  // F32 cache and flash attention off the two layouts differ only in the rounding of attention
  // over other sequences' masked cells, far below this organism's greedy margins.
  test::TempDir out;
  auto o = options("cache", "choice");
  o.limit = 8;
  o.engine.type_k = o.engine.type_v = KvType::F32;
  o.engine.flash_attn = FlashAttn::Off;
  o.out_dir = out.file("unified");
  eval::run_eval(model_, o);
  auto s = o;
  s.engine.kv_streams = KvStreams::PerSequence;
  s.out_dir = out.file("streams");
  const ordered_json summary = eval::run_eval(model_, s);
  EXPECT_EQ(responses_of(s.out_dir), responses_of(o.out_dir));
  EXPECT_EQ(summary.at("n"), 8);
  const auto config = ordered_json::parse(read_text_file(s.out_dir + "/config.json"));
  EXPECT_EQ(config.at("engine"), (ordered_json{{"cache_type_k", "f32"},
                                               {"cache_type_v", "f32"},
                                               {"flash_attn", "off"},
                                               {"kv_streams", "per-sequence"}}));
  // The library's default engine is not written, so runs made before the key existed resume.
  auto d = options("cache", "choice");
  d.limit = 2;
  d.out_dir = out.file("default");
  eval::run_eval(model_, d);
  EXPECT_FALSE(ordered_json::parse(read_text_file(d.out_dir + "/config.json")).contains("engine"));
  // Resuming with another engine is refused, naming it.
  s.engine.kv_streams = KvStreams::Unified;
  try {
    eval::run_eval(model_, s);
    FAIL() << "a run was resumed with another engine";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("(engine differ)"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace kvsteer
