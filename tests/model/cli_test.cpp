// The kvsteer command line, end to end on stories260K: outputs, JSON, and every refusal.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "eval/contrastive.h"
#include "eval/traces.h"
#include "kvsteer/vector_file.h"
#include "support/model_cases.h"
#include "support/run_command.h"
#include "support/test_env.h"

namespace kvsteer {
namespace {

using test::run_command;

class Cli : public ::testing::Test {
 protected:
  void SetUp() override {
    cli_ = test::cli_path();
    model_ = test::stories_model_path();
    // Three tiny traces in the paper's format: question, steps, solution.
    test::write_file(
        dir_.file("traces.jsonl"),
        R"({"query": "Tom has 2 apples. He gets 3 more. How many?", "steps": ["2 + 3 = 5."], "solution": "5"})"
        "\n"
        R"({"query": "Lily had 7 toys. She gave 4 away. How many are left?", "steps": ["7 - 4 = 3."], "solution": "3"})"
        "\n"
        R"({"query": "A cat saw 1 bird and then 5 more birds. How many birds?", "steps": ["1 + 5 = 6."], "solution": "6"})"
        "\n");
  }
  std::vector<std::string> base(const std::string& sub) const {
    return {cli_, sub, "-m", model_, "-t", "1", "-c", "512", "--ctk", "f32", "--ctv", "f32"};
  }
  test::CommandResult extract(const std::string& out, std::vector<std::string> extra = {}) {
    auto args = base("extract");
    for (const auto& a :
         std::vector<std::string>{"--traces", dir_.file("traces.jsonl"), "-N", "3", "-k", "1",
                                  "--chat-template", "chatml", "-o", out}) {
      args.push_back(a);
    }
    args.insert(args.end(), extra.begin(), extra.end());
    return run_command(args);
  }
  std::string cli_, model_;
  test::TempDir dir_;
};

TEST_F(Cli, ExtractedVectorIsTheMeanOfKvDumpDifferences) {
  const auto r = extract(dir_.file("v.gguf"), {"--parallel", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto vec = load_steering_vector(dir_.file("v.gguf"));
  EXPECT_EQ(vec.info.n_pairs, 3u);
  EXPECT_EQ(vec.info.n_shots, 1u);

  // Render the same prompts and dump their last cells with kv-dump --raw.
  const auto traces = eval::load_traces(dir_.file("traces.jsonl"), eval::TaskFormat::Generic);
  const auto neighbours = eval::lexical_neighbours(traces.rows, 1);
  const auto model = test::shared_model("stories260K");
  std::vector<std::vector<double>> want_v(5, std::vector<double>(32, 0.0));
  for (std::size_t i = 0; i < 3; ++i) {
    for (bool positive : {true, false}) {
      const auto messages = eval::contrastive_messages(traces.rows, neighbours[i], i, positive);
      test::write_file(dir_.file("prompt.txt"),
                       model->apply_chat_template(messages, true, "chatml"));
      auto args = base("kv-dump");
      args.insert(args.end(), {"--raw", "-f", dir_.file("prompt.txt"), "--json"});
      const auto d = run_command(args);
      ASSERT_EQ(d.exit_code, 0) << d.err;
      const auto j = nlohmann::json::parse(d.out);
      for (const auto& layer : j["layers"]) {
        const auto il = layer["il"].get<std::size_t>();
        const auto v = layer["v"].get<std::vector<float>>();
        for (std::size_t x = 0; x < v.size(); ++x)
          want_v[il][x] += (positive ? 1 : -1) * v[x] / 3.0;
      }
    }
  }
  double max_diff = 0;
  for (std::size_t il = 0; il < 5; ++il) {
    for (std::size_t x = 0; x < 32; ++x) {
      max_diff = std::max(max_diff, std::abs(vec.v[il][x] - want_v[il][x]));
    }
  }
  EXPECT_LT(max_diff, 1e-5) << max_diff;
}

// Your own pairs: a string side is the user turn as `kv-dump -p` renders it, a message list is
// rendered with the template and its generation prompt; the vector is the mean of their last
// cells' differences, and its record names the file.
TEST_F(Cli, PairsFileSidesAreRenderedAsPromptsAndAveraged) {
  const std::vector<ChatMessage> pos_chat = {
      {"user", "Say it twice. Hi"}, {"assistant", "Hi hi."}, {"user", "Tom ran."}};
  const std::vector<ChatMessage> neg_chat = {
      {"user", "Say it once. Hi"}, {"assistant", "Hi."}, {"user", "Tom ran."}};
  const auto as_json = [](const std::vector<ChatMessage>& chat) {
    nlohmann::json list = nlohmann::json::array();
    for (const auto& m : chat) list.push_back({{"role", m.role}, {"content", m.content}});
    return list;
  };
  const std::string file =
      nlohmann::json{{"positive", "Tell it slowly, step by step. Tim had a dog."},
                     {"negative", "Tell it. Tim had a dog."},
                     {"note", "other keys are ignored"}}
          .dump() +
      "\n\n" +
      nlohmann::json{{"positive", as_json(pos_chat)}, {"negative", as_json(neg_chat)}}.dump() +
      "\n";
  test::write_file(dir_.file("pairs.jsonl"), file);
  auto args = base("extract");
  args.insert(args.end(), {"--pairs-file", dir_.file("pairs.jsonl"), "--chat-template", "chatml",
                           "--parallel", "1", "-o", dir_.file("p.gguf")});
  const auto r = run_command(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err.find("warning"), std::string::npos) << r.err;  // both pairs end alike
  const auto vec = load_steering_vector(dir_.file("p.gguf"));
  EXPECT_EQ(vec.info.n_pairs, 2u);
  EXPECT_EQ(vec.info.n_shots, 0u);
  EXPECT_EQ(vec.info.traces_sha256, eval::sha256_hex(file));
  EXPECT_EQ(vec.info.source.rfind("kvsteer extract --pairs-file --parallel 1", 0), 0u)
      << vec.info.source;

  const auto model = test::shared_model("stories260K");
  const auto dump_v = [&](std::vector<std::string> prompt) {
    auto d_args = base("kv-dump");
    d_args.insert(d_args.end(), prompt.begin(), prompt.end());
    d_args.push_back("--json");
    const auto d = run_command(d_args);
    EXPECT_EQ(d.exit_code, 0) << d.err;
    std::vector<std::vector<float>> v;
    const auto j = nlohmann::json::parse(d.out);
    for (const auto& layer : j["layers"]) {
      v.push_back(layer["v"].get<std::vector<float>>());
    }
    return v;
  };
  const auto rendered = [&](const std::vector<ChatMessage>& chat, const std::string& name) {
    test::write_file(dir_.file(name), model->apply_chat_template(chat, true, "chatml"));
    return std::vector<std::string>{"--raw", "-f", dir_.file(name)};
  };
  const std::vector<std::vector<std::vector<float>>> pos = {
      dump_v({"-p", "Tell it slowly, step by step. Tim had a dog.", "--chat-template", "chatml"}),
      dump_v(rendered(pos_chat, "pos.txt"))};
  const std::vector<std::vector<std::vector<float>>> neg = {
      dump_v({"-p", "Tell it. Tim had a dog.", "--chat-template", "chatml"}),
      dump_v(rendered(neg_chat, "neg.txt"))};
  for (const auto* side : {&pos, &neg}) {
    for (const auto& dump : *side) {
      ASSERT_EQ(dump.size(), vec.v.size());
      for (std::size_t il = 0; il < dump.size(); ++il) ASSERT_EQ(dump[il].size(), vec.v[il].size());
    }
  }
  double max_diff = 0;
  double max_value = 0;
  for (std::size_t il = 1; il < vec.v.size(); ++il) {
    for (std::size_t x = 0; x < vec.v[il].size(); ++x) {
      const double want = ((pos[0][il][x] - neg[0][il][x]) + (pos[1][il][x] - neg[1][il][x])) / 2.0;
      max_diff = std::max(max_diff, std::abs(vec.v[il][x] - want));
      max_value = std::max(max_value, std::abs(want));
    }
  }
  EXPECT_LT(max_diff, 1e-5) << max_diff;
  EXPECT_GT(max_value, 1e-2);  // the sides differ: a wrong rendering could not pass by accident
}

// Pairs whose sides end on different tokens are extracted, with one warning naming them: the
// cell read then differs by the tokens themselves, not only by their contexts.
TEST_F(Cli, PairsFileWarnsWhenSidesEndOnDifferentTokens) {
  test::write_file(
      dir_.file("raw.jsonl"),
      R"({"positive": "Tim had a dog. The dog was big", "negative": "Tim had a dog. The dog was big"})"
      "\n"
      R"({"positive": "Tim had a cat", "negative": "Tim had a dog"})"
      "\n");
  auto args = base("extract");
  args.insert(args.end(),
              {"--pairs-file", dir_.file("raw.jsonl"), "--raw", "-o", dir_.file("raw.gguf")});
  const auto r = run_command(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("kvsteer: warning: 1 of 2 pairs hold different tokens at position -1"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("(first: pair 2, line 2)"), std::string::npos) << r.err;
  EXPECT_EQ(load_steering_vector(dir_.file("raw.gguf")).info.chat_template, "none (raw)");
}

TEST_F(Cli, SteeredGenerationDiffersFromPlain) {
  ASSERT_EQ(extract(dir_.file("v.gguf")).exit_code, 0);
  auto plain = base("generate");
  plain.insert(plain.end(), {"-p", "Once upon a time", "--raw", "-n", "24", "--json"});
  auto steered = plain;
  steered.insert(steered.end(), {"--vector", dir_.file("v.gguf"), "--cv", "60", "--ck", "20"});
  const auto a = run_command(plain);
  const auto b = run_command(steered);
  ASSERT_EQ(a.exit_code, 0) << a.err;
  ASSERT_EQ(b.exit_code, 0) << b.err;
  const auto ja = nlohmann::json::parse(a.out);
  const auto jb = nlohmann::json::parse(b.out);
  EXPECT_FALSE(ja["steered"].get<bool>());
  EXPECT_TRUE(jb["steered"].get<bool>());
  EXPECT_NE(ja["tokens"], jb["tokens"]);
  EXPECT_EQ(run_command(steered).out, b.out);  // reproducible
  // The aliases of the spellings before eval's were adopted mean the same.
  auto aliased = plain;
  aliased.insert(aliased.end(),
                 {"--steer", dir_.file("v.gguf"), "--coef-v", "60", "--coef-k", "20"});
  EXPECT_EQ(run_command(aliased).out, b.out);
}

TEST_F(Cli, InfoDescribesModelAndVector) {
  ASSERT_EQ(extract(dir_.file("v.gguf")).exit_code, 0);
  const auto r = run_command({cli_, "info", "-m", model_, "--vector", dir_.file("v.gguf")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["model"]["fingerprint"]["n_layer"], 5);
  EXPECT_EQ(j["vector"]["n_pairs"], 3);
  EXPECT_TRUE(j["compatible"].get<bool>());
}

// The instruction sets of the engine, which greedy answers depend on (scripts/llama_isa.sh):
// what libllama's CPU backend reports, without its trailing separator.
TEST_F(Cli, InfoEngineNamesTheInstructionSetsLibllamaWasBuiltWith) {
  const auto r = run_command({cli_, "info", "--engine"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string features = nlohmann::json::parse(r.out)["engine"]["cpu_features"];
  EXPECT_EQ(features.rfind("CPU : ", 0), 0u) << features;
  EXPECT_NE(features.find(" = 1"), std::string::npos) << features;
  EXPECT_NE(features.back(), '|');
  EXPECT_NE(features.back(), ' ');
  const auto bare = run_command({cli_, "info"});
  EXPECT_EQ(bare.exit_code, 2);  // usage
  EXPECT_NE(bare.err.find("--engine"), std::string::npos) << bare.err;
}

// A prompt is content and kept as typed; `-e` reads \n, \t, \r and \\ in --prompt, --system and
// --cot-prefix as llama-cli does. Kept as typed, a backslash escape is noted on stderr, since
// `-p "a\nb"` in a shell is rarely meant to hold a backslash.
// --messages: a conversation is one prompt, rendered with the template and its generation
// prompt, for generate and kv-dump alike; the cot prefix follows it.
TEST_F(Cli, MessagesFileIsOneConversationRenderedWithTheTemplate) {
  const std::vector<ChatMessage> chat = {
      {"system", "Be brief."}, {"user", "Tim had a dog."}, {"assistant", "Yes."}, {"user", "And?"}};
  nlohmann::json list = nlohmann::json::array();
  for (const auto& m : chat) list.push_back({{"role", m.role}, {"content", m.content}});
  test::write_file(dir_.file("chat.json"), list.dump());
  const auto model = test::shared_model("stories260K");
  test::write_file(dir_.file("chat.txt"),
                   model->apply_chat_template(chat, true, "chatml") + "Step one.");
  const auto run = [&](const std::string& sub, std::vector<std::string> extra) {
    auto args = base(sub);
    args.insert(args.end(), extra.begin(), extra.end());
    auto r = run_command(args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return nlohmann::json::parse(r.out);
  };
  const std::vector<std::string> as_messages = {"--messages",      dir_.file("chat.json"),
                                                "--chat-template", "chatml",
                                                "--cot-prefix",    "Step one.",
                                                "--json"};
  const std::vector<std::string> as_text = {"--raw", "-f", dir_.file("chat.txt"), "--json"};
  auto gen_messages = as_messages;
  auto gen_text = as_text;
  for (auto* args : {&gen_messages, &gen_text}) args->insert(args->end(), {"-n", "12"});
  const auto a = run("generate", gen_messages);
  const auto b = run("generate", gen_text);
  EXPECT_EQ(a["prompt_tokens"], b["prompt_tokens"]);
  EXPECT_EQ(a["tokens"], b["tokens"]);
  EXPECT_GT(a["prompt_tokens"].size(), 20u);
  EXPECT_EQ(run("kv-dump", as_messages)["prompt_tokens"], run("kv-dump", as_text)["prompt_tokens"]);
}

TEST_F(Cli, PromptEscapesAreReadWhenAskedAndNotedOtherwise) {
  auto dump = [&](const std::vector<std::string>& extra) {
    auto args = base("kv-dump");
    args.insert(args.end(), {"--json", "--chat-template", "chatml"});
    args.insert(args.end(), extra.begin(), extra.end());
    auto r = run_command(args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r;
  };
  auto tokens = [](const test::CommandResult& r) {
    return nlohmann::json::parse(r.out)["prompt_tokens"].get<std::vector<int>>();
  };
  const auto typed = dump({"--raw", "-p", "One day\nTim\tran."});
  const auto read = dump({"--raw", "-e", "-p", "One day\\nTim\\tran."});
  EXPECT_EQ(tokens(read), tokens(typed));
  EXPECT_EQ(read.err.find("note"), std::string::npos) << read.err;
  const auto kept = dump({"--raw", "-p", "One day\\nTim\\tran."});
  EXPECT_NE(tokens(kept), tokens(typed));
  EXPECT_NE(kept.err.find("--prompt holds a backslash escape"), std::string::npos) << kept.err;
  EXPECT_EQ(tokens(dump({"--raw", "-e", "-p", "a\\\\b"})), tokens(dump({"--raw", "-p", "a\\b"})));

  const auto system_typed = dump({"-p", "Hi", "--system", "Be\nkind", "--cot-prefix", "Ok\n"});
  const auto system_read =
      dump({"-p", "Hi", "--escape", "--system", "Be\\nkind", "--cot-prefix", "Ok\\n"});
  EXPECT_EQ(tokens(system_read), tokens(system_typed));
  const auto system_kept = dump({"-p", "Hi", "--system", "Be\\nkind"});
  EXPECT_NE(system_kept.err.find("--system holds a backslash escape"), std::string::npos)
      << system_kept.err;
  // A file is read as it is, -e or not.
  test::write_file(dir_.file("prompt.txt"), "One day\\nTim");
  EXPECT_EQ(tokens(dump({"--raw", "-e", "-f", dir_.file("prompt.txt")})),
            tokens(dump({"--raw", "-p", "One day\\nTim"})));
}

struct Refusal {
  std::vector<std::string> args;  // after `kvsteer <sub> -m MODEL ...`
  int exit_code;
  std::string message;  // part of the one-line error
};

TEST_F(Cli, RefusesBadInputWithOneClearLine) {
  ASSERT_EQ(extract(dir_.file("v.gguf")).exit_code, 0);
  test::write_file(dir_.file("corrupt.gguf"), "GGUF but not really");
  auto other = load_steering_vector(dir_.file("v.gguf"));
  other.model.n_layer = 6;
  other.k.emplace_back();
  other.v.emplace_back();
  save_steering_vector(dir_.file("other.gguf"), other);
  const std::string two = R"({"positive": "Tim ran", "negative": "Tim sat"})"
                          "\n";
  test::write_file(dir_.file("two.jsonl"), two + two);
  test::write_file(dir_.file("roles.json"),
                   R"([{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}])");
  test::write_file(dir_.file("one-sided.jsonl"), two + R"({"positive": "Tim ran"})"
                                                       "\n");
  test::write_file(
      dir_.file("roles.jsonl"),
      R"({"positive": [{"role": "user", "content": "a"}], "negative": [{"role": "users", "content": "a"}]})"
      "\n");
  const std::string p = "Once upon a time";
  const std::vector<std::pair<std::vector<std::string>, Refusal>> cases = {
      {{cli_, "generate", "-m", dir_.file("absent.gguf"), "-p", p}, {{}, 1, "does not exist"}},
      {{cli_, "generate", "-m", dir_.path(), "-p", p}, {{}, 2, "is a directory, not a file"}},
      {base("generate"),
       {{"--raw", "-p", p, "--steer", dir_.path()}, 2, "is a directory, not a file"}},
      {base("bench"), {{"--contexts", "0"}, 2, "--contexts"}},
      {{cli_, "generate", "-m", dir_.file("corrupt.gguf"), "-p", p}, {{}, 1, "cannot load model"}},
      {base("generate"),
       {{"--raw", "-p", p, "--steer", dir_.file("corrupt.gguf")}, 1, "not a GGUF"}},
      {base("generate"),
       {{"--raw", "-p", p, "--steer", dir_.file("other.gguf")}, 1, "n_layer is 6"}},
      {base("generate"),
       {{"--raw", "-p", p, "--steer", dir_.file("v.gguf"), "--coef-v", "nan"}, 2, "finite"}},
      {base("generate"),
       {{"--raw", "-p", p, "--steer", dir_.file("v.gguf"), "--coef-k", "inf"}, 2, "finite"}},
      {base("generate"),
       {{"--raw", "-p", p, "--steer", dir_.file("v.gguf"), "--layers", "9"}, 2, "layer 9"}},
      {base("generate"),
       {{"--raw", "-p", p, "--steer", dir_.file("v.gguf"), "--layers", "x"}, 2, "layer selection"}},
      {base("generate"), {{"--raw", "-p", p, "--cv", "4"}, 2, "--cv scales or places"}},
      {base("generate"), {{"--raw", "-p", p, "--offset", ""}, 2, "--offset none decodes none"}},
      {base("generate"), {{"--raw", "-p", p, "--offset", "\\q"}, 2, "unknown escape '\\q'"}},
      {base("generate"), {{"--raw", "-p", p, "--offset", "a\\"}, 2, "lone backslash"}},
      {{cli_, "eval", "-m", model_, "--offset", "\\q"}, {{}, 2, "unknown escape '\\q'"}},
      {base("generate"), {{"--raw", "-e", "-p", "a\\q"}, 2, "--prompt: unknown escape '\\q'"}},
      {base("kv-dump"),
       {{"-e", "-p", p, "--chat-template", "chatml", "--system", "s\\"}, 2, "--system: ends"}},
      {base("generate"), {{"--raw", "-p", p, "--stop", "a", "--stop", "b\\"}, 2, "lone backslash"}},
      {base("kv-dump"), {{"--raw", "-p", p, "--layers-v", "2"}, 2, "give --vector FILE"}},
      {base("generate"),
       {{"--raw", "-p", p, "-f", dir_.file("traces.jsonl")}, 2, "--prompt excludes --file"}},
      {base("generate"),
       {{"--raw", "-p", p, "--steer", dir_.file("v.gguf"), "--layers", "9-"},
        2,
        "'9-' selects no layer"}},
      {base("generate"), {{"--raw", "-p", std::string(3000, 'a'), "-n", "4"}, 2, "--ctx-size"}},
      {base("generate"),
       {{"--raw", "-p", p, "--stop", ".", "--stop", ""}, 2, "stop string 2 of 2 is empty"}},
      {base("generate"), {{"-p", p}, 2, "no chat template"}},
      {base("generate"), {{"--raw", "--bogus"}, 2, "bogus"}},
      {base("kv-dump"), {{"--raw", "-p", p, "--pos", "99"}, 2, "outside the prompt"}},
      {base("extract"),
       {{"--traces", dir_.file("absent.jsonl"), "-o", dir_.file("x.gguf")}, 1, "does not exist"}},
      {base("extract"),
       {{"--traces", dir_.path(), "-o", dir_.file("x.gguf")}, 2, "is a directory, not a file"}},
      {base("extract"),
       {{"--traces", dir_.file("traces.jsonl"), "-N", "3", "-k", "1", "-o", dir_.path()},
        2,
        "output vector file '" + dir_.path() + "' is a directory, not a file"}},
      {base("extract"),
       {{"--traces", dir_.file("traces.jsonl"), "-N", "3", "-k", "1", "-o",
         dir_.file("no/such/x.gguf")},
        1,
        "its folder '" + dir_.file("no/such") + "' does not exist"}},
      {base("extract"),
       {{"--traces", dir_.file("traces.jsonl"), "-N", "3", "-k", "1", "--position", "-1",
         "--position", "-2", "-o", dir_.file("x.gguf"), "-o", dir_.file("x.gguf")},
        2,
        "is given twice"}},
      {base("extract"),
       {{"--traces", dir_.file("traces.jsonl"), "-N", "3", "-k", "3", "--chat-template", "chatml",
         "-o", dir_.file("x.gguf")},
        2,
        "shots"}},
      {base("extract"),
       {{"--traces", dir_.file("traces.jsonl"), "-N", "9", "-o", dir_.file("x.gguf")}, 2, "fewer"}},
      {base("extract"), {{"-o", dir_.file("x.gguf")}, 2, "no pairs: pass --traces FILE"}},
      {base("generate"),
       {{"--messages", dir_.file("roles.json"), "--chat-template", "chatml"},
        1,
        "messages file '" + dir_.file("roles.json") + "' message 2 has role 'tool'"}},
      {base("generate"),
       {{"--messages", dir_.file("two.jsonl"), "--chat-template", "chatml"},
        1,
        "messages file '" + dir_.file("two.jsonl") + "' is not valid JSON"}},
      {base("kv-dump"),
       {{"--messages", dir_.file("roles.json"), "--system", "s"},
        2,
        "--messages excludes --system"}},
      {base("generate"), {{}, 2, "no prompt: pass --prompt TEXT, --file FILE or --messages FILE"}},
      {base("extract"),
       {{"--pairs-file", dir_.file("one-sided.jsonl"), "--raw", "-o", dir_.file("x.gguf")},
        1,
        "line 2: no 'negative' side"}},
      {base("extract"),
       {{"--pairs-file", dir_.file("roles.jsonl"), "--chat-template", "chatml", "-o",
         dir_.file("x.gguf")},
        1,
        "line 1: 'negative' message 1 has role 'users'"}},
      {base("extract"),
       {{"--pairs-file", dir_.file("roles.jsonl"), "--raw", "-o", dir_.file("x.gguf")},
        2,
        "'positive' is a message list, which needs the chat template"}},
      {base("extract"),
       {{"--pairs-file", dir_.file("two.jsonl"), "--raw", "-N", "3", "-o", dir_.file("x.gguf")},
        2,
        "--n-pairs 3 is more than the 2 pairs"}},
      {base("extract"),
       {{"--pairs-file", dir_.file("two.jsonl"), "--raw", "-N", "0", "-o", dir_.file("x.gguf")},
        2,
        "--n-pairs must be at least 1"}},
      {base("extract"),
       {{"--pairs-file", dir_.file("two.jsonl"), "-k", "2", "-o", dir_.file("x.gguf")},
        2,
        "--pairs-file excludes --shots"}},
      {base("extract"),
       {{"--traces", dir_.file("traces.jsonl"), "--raw", "-o", dir_.file("x.gguf")},
        2,
        "--raw requires --pairs-file"}},
      {base("extract"),
       {{"--pairs-file", dir_.file("two.jsonl"), "--raw", "--chat-template", "chatml", "-o",
         dir_.file("x.gguf")},
        2,
        "--raw excludes --chat-template"}},
  };
  for (const auto& [prefix, refusal] : cases) {
    auto args = prefix;
    args.insert(args.end(), refusal.args.begin(), refusal.args.end());
    const auto r = run_command(args);
    std::string shown;
    for (const auto& a : args) shown += a.substr(0, 40) + " ";
    EXPECT_EQ(r.exit_code, refusal.exit_code) << shown << "\n" << r.err;
    EXPECT_NE(r.err.find(refusal.message), std::string::npos) << shown << "\n" << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << shown << "\n" << r.err;
    EXPECT_EQ(r.err.rfind("kvsteer: error: ", 0), 0u) << r.err;
  }
  EXPECT_FALSE(std::filesystem::exists(dir_.file("x.gguf")));
}

TEST_F(Cli, FailedExtractionKeepsThePreviousOutput) {
  ASSERT_EQ(extract(dir_.file("v.gguf")).exit_code, 0);
  const std::string before = test::read_file(dir_.file("v.gguf"));
  test::write_file(dir_.file("bad.jsonl"),
                   "{\"query\": \"x\", \"steps\": \"not a list\", \"solution\": \"1\"}\n");
  auto args = base("extract");
  args.insert(args.end(), {"--traces", dir_.file("bad.jsonl"), "-N", "1", "-k", "0", "-o",
                           dir_.file("v.gguf")});
  const auto r = run_command(args);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("steps"), std::string::npos) << r.err;
  EXPECT_EQ(test::read_file(dir_.file("v.gguf")), before);
}

// A killed extraction leaves its checkpoint; run again, it goes on from there to the vector an
// uninterrupted run writes, and removes the checkpoint. A damaged checkpoint is named and ignored.
TEST_F(Cli, KilledExtractionResumesFromItsCheckpoint) {
  test::write_file(
      dir_.file("more.jsonl"),
      test::read_file(dir_.file("traces.jsonl")) +
          R"({"query": "Sam had 9 kites. 2 flew away. How many now?", "steps": ["9 - 2 = 7."], "solution": "7"})"
          "\n");
  const auto run = [&](const std::string& out, std::vector<std::string> extra) {
    auto args = base("extract");
    if (!extra.empty() && extra.front().rfind("KVSTEER_", 0) == 0) {
      args.insert(args.begin(), {"env", extra.front()});
      extra.erase(extra.begin());
    }
    args.insert(args.end(), {"--traces", dir_.file("more.jsonl"), "-N", "4", "-k", "1",
                             "--chat-template", "chatml", "--parallel", "2", "--position", "-1",
                             "--position", "-2", "-o", out, "-o", out + ".second"});
    args.insert(args.end(), extra.begin(), extra.end());
    return run_command(args);
  };
  ASSERT_EQ(run(dir_.file("whole.gguf"), {"--no-checkpoint"}).exit_code, 0);
  EXPECT_FALSE(std::filesystem::exists(dir_.file("whole.gguf.partial")));

  const std::string out = dir_.file("v.gguf");
  const auto killed =
      run(out, {"KVSTEER_TEST_EXIT_AFTER_CHECKPOINTS=2", "--checkpoint-every", "0"});
  EXPECT_EQ(killed.exit_code, 137) << killed.err;
  EXPECT_FALSE(std::filesystem::exists(out));
  ASSERT_TRUE(std::filesystem::exists(out + ".partial"));
  const std::string checkpoint = test::read_file(out + ".partial");
  const auto resumed = run(out, {"--checkpoint-every", "0"});
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_NE(resumed.err.find("resuming from " + out + ".partial: 2 of 4 pairs done"),
            std::string::npos)
      << resumed.err;
  EXPECT_FALSE(std::filesystem::exists(out + ".partial"));
  for (const auto& [got, want] :
       {std::pair{out, dir_.file("whole.gguf")},
        std::pair{out + ".second", dir_.file("whole.gguf") + ".second"}}) {
    const auto a = load_steering_vector(got);
    const auto b = load_steering_vector(want);
    EXPECT_EQ(a.k, b.k) << got;
    EXPECT_EQ(a.v, b.v) << got;
    EXPECT_EQ(a.info.source, b.info.source);
  }

  // A damaged checkpoint, and one of another extraction: a warning, and a whole new extraction.
  const std::string other = dir_.file("o.gguf");
  ASSERT_EQ(
      run(other, {"KVSTEER_TEST_EXIT_AFTER_CHECKPOINTS=1", "--checkpoint-every", "0"}).exit_code,
      137);
  std::string damaged = test::read_file(other + ".partial");
  damaged[damaged.size() / 2] ^= 0x40;
  test::write_file(other + ".partial", damaged);
  const auto fresh = run(other, {});
  ASSERT_EQ(fresh.exit_code, 0) << fresh.err;
  EXPECT_NE(fresh.err.find("checksum mismatch"), std::string::npos) << fresh.err;
  EXPECT_EQ(fresh.err.find("resuming"), std::string::npos) << fresh.err;
  EXPECT_EQ(load_steering_vector(other).v, load_steering_vector(dir_.file("whole.gguf")).v);
  auto args = base("extract");
  args.insert(args.end(),
              {"--traces", dir_.file("more.jsonl"), "-N", "3", "-k", "1", "--chat-template",
               "chatml", "-o", dir_.file("three.gguf"), "--checkpoint", dir_.file("kept.partial")});
  test::write_file(dir_.file("kept.partial"), checkpoint);
  const auto foreign = run_command(args);
  ASSERT_EQ(foreign.exit_code, 0) << foreign.err;
  EXPECT_NE(foreign.err.find("another extraction"), std::string::npos) << foreign.err;
}

}  // namespace
}  // namespace kvsteer
