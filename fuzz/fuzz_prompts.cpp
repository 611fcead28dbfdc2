// The prompt renderers on arbitrary message text: the reference templates of every family
// (eval/prompts.h), template detection on arbitrary template text, and the chat-template path
// through libllama (Model::apply_chat_template with the input's template text, then
// Model::tokenize_prompt on the result) with the organism's vocabulary.
//
// Input: fields separated by '\x01': template text, then role and content of each message (at
// most 8). The first byte of the template field picks add_generation_prompt.
#include <string>
#include <vector>

#include "eval/prompts.h"
#include "fuzz_util.h"
#include "kvsteer/backend.h"
#include "kvsteer/error.h"
#include "kvsteer/model.h"

namespace {

using namespace kvsteer;
using namespace kvsteer::eval;

std::shared_ptr<const Model> g_model;

std::vector<std::string> fields_of(std::string_view text) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (out.size() < 17) {
    const std::size_t sep = text.find('\x01', start);
    out.emplace_back(text.substr(start, sep == std::string_view::npos ? sep : sep - start));
    if (sep == std::string_view::npos) break;
    start = sep + 1;
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  static Backend backend(LogLevel::Silent);
  ModelParams p;
  p.vocab_only = true;
  g_model = load_model(KVSTEER_FUZZ_VOCAB_GGUF, p);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > 8192) return 0;  // prompts are a few KB; keep each run fast
  const std::vector<std::string> fields = fields_of(fuzz::as_text(data, size));
  const std::string& tmpl = fields[0];
  const bool add_generation_prompt = !tmpl.empty() && (tmpl[0] & 1) != 0;
  std::vector<ChatMessage> messages;
  for (std::size_t i = 1; i + 1 < fields.size(); i += 2) {
    messages.push_back({fields[i], fields[i + 1]});
  }
  for (PromptFamily family :
       {PromptFamily::Llama32, PromptFamily::Llama31, PromptFamily::Qwen2, PromptFamily::SmolLM2,
        PromptFamily::Phi4Mini, PromptFamily::ChatMl}) {
    const std::string text = render_reference_prompt(family, messages, add_generation_prompt);
    (void)g_model->tokenize_prompt(text);
  }
  (void)detect_prompt_family(tmpl);
  try {
    const std::string text = g_model->apply_chat_template(messages, add_generation_prompt, tmpl);
    const std::vector<Token> tokens = g_model->tokenize_prompt(text);
    (void)g_model->detokenize(tokens);
  } catch (const Error& e) {
    // Unsupported: a template libllama cannot render; InvalidArgument: no template at all.
    if (e.code() != ErrorCode::Unsupported && e.code() != ErrorCode::InvalidArgument) std::abort();
  }
  return 0;
}
