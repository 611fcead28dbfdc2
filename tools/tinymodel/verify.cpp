#include "verify.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <vector>

#include "kvsteer/error.h"
#include "llama-cpp.h"
#include "llama_log.h"

namespace kvsteer::tinymodel {
namespace {

constexpr uint32_t kStateMagic = 0xaf143cd8;  // llama-context.cpp, sequence-state blob header
constexpr int kGreedySteps = 4;
constexpr int kThreads = 1;

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw Error(ErrorCode::Format, "verify '" + path + "': " + what);
}

std::vector<llama_token> tokenize(const llama_vocab* vocab, const std::string& text,
                                  bool add_special) {
  std::vector<llama_token> tokens(text.size() + 8);
  int32_t n = llama_tokenize(vocab, text.c_str(), static_cast<int32_t>(text.size()), tokens.data(),
                             static_cast<int32_t>(tokens.size()), add_special,
                             /*parse_special=*/true);
  if (n < 0) {
    tokens.resize(static_cast<size_t>(-n));
    n = llama_tokenize(vocab, text.c_str(), static_cast<int32_t>(text.size()), tokens.data(),
                       static_cast<int32_t>(tokens.size()), add_special, true);
  }
  tokens.resize(static_cast<size_t>(std::max(n, 0)));
  return tokens;
}

bool is_special(const llama_vocab* vocab, llama_token t) {
  return (llama_vocab_get_attr(vocab, t) &
          (LLAMA_TOKEN_ATTR_CONTROL | LLAMA_TOKEN_ATTR_USER_DEFINED)) != 0;
}

// Renders one user turn "hello" with the model's chat template and builds the verification
// prompt; checks that special tokens are parsed.
std::vector<llama_token> chat_prompt(const llama_model* model, const std::string& path) {
  const llama_vocab* vocab = llama_model_get_vocab(model);
  const char* tmpl = llama_model_chat_template(model, nullptr);
  if (tmpl == nullptr) {
    fail(path, "no tokenizer.chat_template");
  }
  const llama_chat_message msg = {"user", "hello"};
  std::vector<char> buf(1024);
  const int32_t n =
      llama_chat_apply_template(tmpl, &msg, 1, true, buf.data(), static_cast<int32_t>(buf.size()));
  if (n <= 0 || n > static_cast<int32_t>(buf.size())) {
    fail(path, "llama_chat_apply_template does not recognise the chat template");
  }
  const std::string rendered(buf.data(), static_cast<size_t>(n));
  if (rendered.find("hello") == std::string::npos) {
    fail(path, "rendered chat template lacks the message: '" + rendered + "'");
  }
  const std::vector<llama_token> rendered_tokens = tokenize(vocab, rendered, false);
  const auto n_special = std::count_if(rendered_tokens.begin(), rendered_tokens.end(),
                                       [&](llama_token t) { return is_special(vocab, t); });
  if (n_special < 2) {
    fail(path, "the rendered chat template tokenizes to " + std::to_string(n_special) +
                   " control tokens, expected >= 2 (special-token parsing)");
  }

  const std::vector<llama_token> im_start = tokenize(vocab, "<|im_start|>", false);
  const bool chatml = im_start.size() == 1 && is_special(vocab, im_start[0]);
  if (!chatml) {
    return tokenize(vocab, rendered, true);
  }
  const std::string text = "<|im_start|>user\nhello<|im_end|>";
  std::vector<llama_token> tokens = tokenize(vocab, text, true);
  const std::vector<llama_token> im_end = tokenize(vocab, "<|im_end|>", false);
  const size_t first = llama_vocab_get_add_bos(vocab) ? 1 : 0;
  if (tokens.size() < first + 3 || tokens[first] != im_start[0] || im_end.size() != 1 ||
      tokens.back() != im_end[0]) {
    fail(path, "'" + text + "' does not tokenize to <|im_start|> ... <|im_end|>");
  }
  return tokens;
}

void check_logits(const float* logits, int32_t n_vocab, const std::string& path,
                  const std::string& where) {
  if (logits == nullptr) {
    fail(path, "no logits " + where);
  }
  float lo = logits[0];
  float hi = logits[0];
  for (int32_t i = 0; i < n_vocab; ++i) {
    if (!std::isfinite(logits[i])) {
      fail(path, "logit " + std::to_string(i) + " is not finite " + where);
    }
    lo = std::min(lo, logits[i]);
    hi = std::max(hi, logits[i]);
  }
  if (!(hi - lo > 1e-4f)) {
    fail(path, "all logits are equal " + where);
  }
}

// Bounds-checked little-endian reader over a state blob. The verifier reads the blocks' headers
// itself rather than through the library's parser (src/kv/seq_blob.*): it checks, on every
// fixture, the layout that parser assumes (block count, SWA block, v_trans), so it must not trust
// it; and tools/tinymodel sits beside the engine, not above it (scripts/check_layers.py).
class BlobReader {
 public:
  BlobReader(const std::vector<uint8_t>& blob, const std::string& path)
      : blob_(blob), path_(path) {}
  template <typename T>
  T read() {
    T value;
    need(sizeof(T));
    std::memcpy(&value, blob_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return value;
  }
  void skip(uint64_t n) {
    need(n);
    pos_ += n;
  }
  bool done() const { return pos_ == blob_.size(); }

 private:
  void need(uint64_t n) const {
    if (n > blob_.size() - pos_) {
      fail(path_, "state blob ends at byte " + std::to_string(blob_.size()) + ", needs " +
                      std::to_string(pos_ + n));
    }
  }
  const std::vector<uint8_t>& blob_;
  const std::string& path_;
  size_t pos_ = 0;
};

struct BlockInfo {
  uint32_t cell_count = 0;
  uint32_t n_layer = 0;
  uint32_t v_trans = 0;
};

// Parses one KV-cache block of a sequence blob (llama_kv_cache::state_write).
BlockInfo parse_block(BlobReader& in, const Recipe& r, const std::string& path) {
  BlockInfo info;
  const auto n_stream = in.read<uint32_t>();
  if (n_stream != 1) {
    fail(path, "n_stream " + std::to_string(n_stream) + ", expected 1 (kv_unified)");
  }
  info.cell_count = in.read<uint32_t>();
  if (info.cell_count == 0) {
    return info;
  }
  for (uint32_t c = 0; c < info.cell_count; ++c) {
    in.read<int32_t>();  // pos
    const auto n_seq_id = in.read<uint32_t>();
    in.skip(static_cast<uint64_t>(n_seq_id) * sizeof(int32_t));
  }
  info.v_trans = in.read<uint32_t>();
  info.n_layer = in.read<uint32_t>();
  const uint64_t row_bytes = 2ull * r.n_head_kv * r.head_dim;  // F16
  for (uint32_t il = 0; il < info.n_layer; ++il) {
    const auto k_type = in.read<int32_t>();
    const auto k_row = in.read<uint64_t>();
    if (k_type != GGML_TYPE_F16 || k_row != row_bytes) {
      fail(path, "K layer " + std::to_string(il) + ": type " + std::to_string(k_type) + ", row " +
                     std::to_string(k_row) + " B; expected F16 rows of " +
                     std::to_string(row_bytes) + " B");
    }
    in.skip(info.cell_count * k_row);
  }
  for (uint32_t il = 0; il < info.n_layer; ++il) {
    in.read<int32_t>();  // v_type
    if (info.v_trans == 0) {
      in.skip(info.cell_count * in.read<uint64_t>());
    } else {
      const auto el_size = in.read<uint32_t>();
      const auto n_embd_v = in.read<uint32_t>();
      in.skip(static_cast<uint64_t>(n_embd_v) * info.cell_count * el_size);
    }
  }
  return info;
}

std::vector<BlockInfo> parse_blob(const std::vector<uint8_t>& blob, const Recipe& r,
                                  const std::string& path) {
  BlobReader in(blob, path);
  if (in.read<uint32_t>() != kStateMagic) {
    fail(path, "state blob has the wrong magic");
  }
  in.read<int32_t>();  // seq_id
  std::vector<BlockInfo> blocks;
  while (!in.done()) {
    blocks.push_back(parse_block(in, r, path));
  }
  return blocks;
}

[[noreturn]] void throw_decode_error(const std::string& path, int32_t rc, const std::string& mode) {
  throw Error(ErrorCode::Backend, "verify '" + path + "': llama_decode returned " +
                                      std::to_string(rc) + " " + mode + ": " + llama_errors());
}

struct RunResult {
  std::vector<float> first_logits;
  std::vector<BlockInfo> blocks;
  int32_t n_cells = 0;
};

RunResult run(llama_model* model, const Recipe& r, std::vector<llama_token> tokens, bool flash_attn,
              const std::string& path) {
  llama_context_params cp = llama_context_default_params();
  cp.n_ctx = 256;
  cp.n_batch = 256;
  cp.n_ubatch = 256;
  cp.n_seq_max = 2;
  cp.kv_unified = true;
  cp.type_k = GGML_TYPE_F16;
  cp.type_v = GGML_TYPE_F16;
  cp.flash_attn_type = flash_attn ? LLAMA_FLASH_ATTN_TYPE_ENABLED : LLAMA_FLASH_ATTN_TYPE_DISABLED;
  cp.n_threads = kThreads;
  cp.n_threads_batch = kThreads;
  clear_llama_errors();
  llama_context_ptr ctx(llama_init_from_model(model, cp));
  if (!ctx) {
    throw Error(ErrorCode::Backend,
                "verify '" + path + "': cannot create a context: " + llama_errors());
  }
  const llama_vocab* vocab = llama_model_get_vocab(model);
  const int32_t n_vocab = llama_vocab_n_tokens(vocab);
  const std::string mode = flash_attn ? "(flash attention on)" : "(flash attention off)";
  RunResult result;
  for (int step = 0; step <= kGreedySteps; ++step) {
    clear_llama_errors();
    const int32_t rc = llama_decode(
        ctx.get(), llama_batch_get_one(tokens.data(), static_cast<int32_t>(tokens.size())));
    if (rc != 0) {
      throw_decode_error(path, rc, mode);
    }
    result.n_cells += static_cast<int32_t>(tokens.size());
    const float* logits = llama_get_logits_ith(ctx.get(), -1);
    check_logits(logits, n_vocab, path, "at step " + std::to_string(step) + " " + mode);
    if (step == 0) {
      result.first_logits.assign(logits, logits + n_vocab);
    }
    tokens = {static_cast<llama_token>(std::max_element(logits, logits + n_vocab) - logits)};
  }
  std::vector<uint8_t> blob(llama_state_seq_get_size(ctx.get(), 0));
  if (llama_state_seq_get_data(ctx.get(), blob.data(), blob.size(), 0) != blob.size()) {
    fail(path, "llama_state_seq_get_data returned a different size " + mode);
  }
  result.blocks = parse_blob(blob, r, path);
  return result;
}

void check_blocks(const RunResult& res, const Recipe& r, bool flash_attn, const std::string& path) {
  const size_t expected_blocks = r.n_swa > 0 ? 2 : 1;
  if (res.blocks.size() != expected_blocks) {
    fail(path, "state blob has " + std::to_string(res.blocks.size()) + " KV blocks, expected " +
                   std::to_string(expected_blocks));
  }
  uint32_t n_layer = 0;
  for (const BlockInfo& b : res.blocks) {
    n_layer += b.n_layer;
    if (b.v_trans != (flash_attn ? 0u : 1u)) {
      fail(path, "v_trans " + std::to_string(b.v_trans) + " with flash attention " +
                     (flash_attn ? "on" : "off"));
    }
  }
  if (n_layer != r.n_layer) {
    fail(path, "state blob holds " + std::to_string(n_layer) + " layers, expected " +
                   std::to_string(r.n_layer));
  }
  if (res.blocks[0].cell_count != static_cast<uint32_t>(res.n_cells)) {
    fail(path, "base block holds " + std::to_string(res.blocks[0].cell_count) +
                   " cells, expected " + std::to_string(res.n_cells));
  }
  if (r.n_swa > 0 && !(res.blocks[1].cell_count < res.blocks[0].cell_count)) {
    fail(path, "SWA block holds " + std::to_string(res.blocks[1].cell_count) +
                   " cells, expected fewer than the base block's " +
                   std::to_string(res.blocks[0].cell_count));
  }
}

}  // namespace

void verify_model(const std::string& path, const Recipe& recipe) {
  llama_model_params mp = llama_model_default_params();
  mp.n_gpu_layers = 0;
  clear_llama_errors();
  llama_model_ptr model(llama_model_load_from_file(path.c_str(), mp));
  if (!model) {
    throw Error(ErrorCode::Backend,
                "verify: libllama cannot load '" + path + "': " + llama_errors());
  }
  std::vector<llama_token> tokens = chat_prompt(model.get(), path);
  if (recipe.n_swa > 0) {
    // Longer than the window, so that old cells drop out of the SWA block.
    const llama_vocab* vocab = llama_model_get_vocab(model.get());
    const std::vector<llama_token> turn(tokens.begin() + (llama_vocab_get_add_bos(vocab) ? 1 : 0),
                                        tokens.end());
    while (tokens.size() < 3 * recipe.n_swa) {
      tokens.insert(tokens.end(), turn.begin(), turn.end());
    }
  }
  const RunResult on = run(model.get(), recipe, tokens, true, path);
  check_blocks(on, recipe, true, path);
  const RunResult off = run(model.get(), recipe, tokens, false, path);
  check_blocks(off, recipe, false, path);

  float max_diff = 0.0f;
  for (size_t i = 0; i < on.first_logits.size(); ++i) {
    max_diff = std::max(max_diff, std::fabs(on.first_logits[i] - off.first_logits[i]));
  }
  std::string blocks;
  for (const BlockInfo& b : on.blocks) {
    blocks += (blocks.empty() ? "" : " + ") + std::to_string(b.n_layer) + " layers x " +
              std::to_string(b.cell_count) + " cells";
  }
  std::printf("verified %s: %zu prompt tokens, KV blocks [%s], FA on/off max |dlogit| %.2e\n",
              std::filesystem::path(path).filename().c_str(), tokens.size(), blocks.c_str(),
              static_cast<double>(max_diff));
}

}  // namespace kvsteer::tinymodel
