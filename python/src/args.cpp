// Keyword arguments shared by the functions that decode, mapped as the CLI maps its flags
// (tools/cli/common.cpp), so that the same settings give the same tokens through both.
#include <algorithm>
#include <cmath>

#include "bindings.h"
#include "eval/conversation.h"
#include "eval/prompts.h"

namespace kvsteer::py {

std::string PromptArgs::render(const Model& model, const std::string& user) const {
  if (raw) return user + cot_prefix;
  return eval::render_user_turn(model, user, system, prompt_family.value_or(""), chat_template) +
         cot_prefix;
}

bool is_conversation(nb::handle prompt) {
  return nb::isinstance<nb::list>(prompt) && nb::len(prompt) > 0 &&
         nb::isinstance<nb::dict>(prompt[nb::int_(0)]);
}

std::string PromptArgs::render_conversation(const Model& model, nb::handle messages) const {
  if (raw) {
    throw Error(ErrorCode::InvalidArgument,
                "raw=True takes str prompts; a conversation is rendered with the chat template");
  }
  if (!system.empty()) {
    throw Error(ErrorCode::InvalidArgument,
                "system= applies to str prompts; put the system message in the conversation");
  }
  const std::vector<ChatMessage> chat = chat_messages(messages);
  for (const ChatMessage& m : chat) {
    if (!eval::is_conversation_role(m.role)) {
      throw Error(ErrorCode::InvalidArgument,
                  "a conversation's roles are system, user and assistant, not '" + m.role + "'");
    }
  }
  return eval::render_conversation(model, chat, prompt_family.value_or(""), chat_template) +
         cot_prefix;
}

std::vector<Token> PromptArgs::tokens(const Model& model, nb::handle prompt) const {
  if (is_conversation(prompt)) {
    return model.tokenize_prompt(render_conversation(model, prompt));
  }
  if (nb::isinstance<nb::str>(prompt)) {
    const std::string text = nb::cast<std::string>(prompt);
    if (text.empty()) throw Error(ErrorCode::InvalidArgument, "a prompt is empty");
    return model.tokenize_prompt(render(model, text));
  }
  // Token ids are decoded as they are: no template, no BOS added.
  std::vector<Token> ids;
  constexpr const char* kNotAPrompt =
      "a prompt must be a str, a conversation (a list of {'role', 'content'} dicts) or a "
      "sequence of token ids";
  try {
    for (nb::handle t : prompt) ids.push_back(nb::cast<Token>(t));
  } catch (const nb::cast_error&) {
    throw Error(ErrorCode::InvalidArgument, kNotAPrompt);
  } catch (const nb::python_error&) {
    throw Error(ErrorCode::InvalidArgument, kNotAPrompt);
  }
  if (ids.empty()) throw Error(ErrorCode::InvalidArgument, "a prompt has no tokens");
  for (Token t : ids) model.check_token(t);
  return ids;
}

void SteerArgs::check_without_vector() const {
  const char* given = coef_k                 ? "c_k"
                      : coef_v               ? "c_v"
                      : layers               ? "layers"
                      : layers_k || layers_v ? "layers_k / layers_v"
                                             : nullptr;
  if (given != nullptr) {
    throw Error(ErrorCode::InvalidArgument,
                std::string(given) + " scales or places a steering vector: pass steer=");
  }
}

SteeringParams SteerArgs::params(const Model& model) const {
  const SteeringParams library_default;
  const float ck = coef_k.value_or(library_default.coef_k);
  const float cv = coef_v.value_or(library_default.coef_v);
  if (!std::isfinite(ck) || !std::isfinite(cv)) {
    throw Error(ErrorCode::InvalidArgument, "c_k and c_v must be finite numbers, got c_k " +
                                                std::to_string(ck) + ", c_v " + std::to_string(cv));
  }
  SteeringParams p;
  p.coef_k = ck;
  p.coef_v = cv;
  const std::string both = layers.value_or("1-");
  p.layers_k = LayerSelection::parse(layers_k.value_or(both));
  p.layers_v = LayerSelection::parse(layers_v.value_or(both));
  if (offset_id) {
    model.check_token(*offset_id);
    p.offset_token = *offset_id;
  } else if (offset) {
    const auto ids = model.tokenize(*offset, false, false);
    if (ids.empty()) {
      throw Error(ErrorCode::InvalidArgument,
                  "offset '" + *offset + "' has no token; offset=None decodes none");
    }
    p.offset_token = ids.front();
  }
  return p;
}

VectorArg vector_arg(nb::handle steer) {
  VectorArg out;
  if (steer.is_none()) return out;
  if (nb::isinstance<SteeringVector>(steer)) {
    out.borrowed = nb::inst_ptr<SteeringVector>(steer);
    return out;
  }
  // A path: str or os.PathLike.
  const std::string path = nb::cast<std::string>(nb::module_::import_("os").attr("fspath")(steer));
  out.loaded = load_steering_vector(path);
  return out;
}

}  // namespace kvsteer::py
