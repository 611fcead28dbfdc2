// The organism generator's test files read back as eval items (eval/datasets.h): what `gen`
// writes is what load_eval_items expects, in both variants.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "eval/datasets.h"
#include "kvsteer/error.h"
#include "organism/gen/commands.h"
#include "organism/gen/dataset.h"
#include "support/test_env.h"

namespace kvsteer::eval {
namespace {

using organism::GenOptions;
using organism::Variant;

GenOptions test_split(Variant variant) {
  GenOptions options;
  options.seed = 7;
  options.n = 40;
  options.split = organism::Split::Test;
  options.variant = variant;
  return options;
}

TEST(OrganismEvalItems, GeneratedFilesReadBack) {
  test::TempDir dir;
  for (Variant variant : {Variant::Numeric, Variant::Choice}) {
    const GenOptions options = test_split(variant);
    const std::string path = dir.file("test.jsonl");
    ASSERT_EQ(organism::run_gen(options, path), options.n);
    const Task task = variant == Variant::Choice ? Task::OrganismChoice : Task::OrganismNumeric;
    const auto items = load_eval_items(task, path);
    const auto expected = organism::generate_items(options);
    ASSERT_EQ(items.size(), expected.size());
    for (std::size_t i = 0; i < items.size(); ++i) {
      EXPECT_EQ(items[i].id, expected[i].id);
      EXPECT_EQ(items[i].question, expected[i].query);
      EXPECT_EQ(items[i].target, expected[i].solution);
      EXPECT_EQ(items[i].n_ops, expected[i].problem.n_ops());
    }
    // The other variant's task refuses the file.
    const Task other = task == Task::OrganismChoice ? Task::OrganismNumeric : Task::OrganismChoice;
    EXPECT_THROW(load_eval_items(other, path), Error);
  }
}

}  // namespace
}  // namespace kvsteer::eval
