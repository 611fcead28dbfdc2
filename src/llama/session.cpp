#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <utility>

#include "kvsteer/error.h"
#include "kvsteer/llama_interop.h"
#include "llama/log.h"
#include "llama/model_impl.h"
#include "llama/session_impl.h"

namespace kvsteer {
namespace {

ggml_type to_ggml(KvType type) {
  switch (type) {
    case KvType::F32:
      return GGML_TYPE_F32;
    case KvType::F16:
      return GGML_TYPE_F16;
    case KvType::BF16:
      return GGML_TYPE_BF16;
    case KvType::Q8_0:
      return GGML_TYPE_Q8_0;
    case KvType::Q4_0:
      return GGML_TYPE_Q4_0;
  }
  return GGML_TYPE_F16;
}

bool is_quantized(KvType type) { return type == KvType::Q8_0 || type == KvType::Q4_0; }

void validate(const Model& model, const SessionParams& p) {
  auto bad = [](const std::string& m) { throw Error(ErrorCode::InvalidArgument, m); };
  if (model.vocab_only()) {
    bad("model '" + model.path() + "' was loaded vocabulary-only");
  }
  if (p.n_ctx < 8) {
    bad("ctx-size " + std::to_string(p.n_ctx) + " is too small (minimum 8)");
  }
  if (p.n_batch < 1 || p.n_batch > p.n_ctx) {
    bad("batch size " + std::to_string(p.n_batch) +
        " must be in [1, ctx-size = " + std::to_string(p.n_ctx) + "]");
  }
  const auto max_seq = static_cast<std::uint32_t>(llama_max_parallel_sequences());
  if (p.n_seq < 1 || p.n_seq + 1 > max_seq) {
    bad("number of sequences " + std::to_string(p.n_seq) + " must be in [1, " +
        std::to_string(max_seq - 1) + "]");
  }
  if (is_quantized(p.type_v) && p.flash_attn == FlashAttn::Off) {
    bad(std::string("a quantized V cache (") + kv_type_name(p.type_v) +
        ") needs flash attention; use --flash-attn on or auto");
  }
  for (const auto& [type, dim, half] :
       {std::tuple{p.type_k, model.fingerprint().n_embd_head_k, "K"},
        std::tuple{p.type_v, model.fingerprint().n_embd_head_v, "V"}}) {
    const std::int64_t block = ggml_blck_size(to_ggml(type));
    if (dim % block != 0) {
      bad(std::string(half) + " cache type " + kv_type_name(type) + " stores blocks of " +
          std::to_string(block) + " values, which do not divide the model's head size " +
          std::to_string(dim) + "; use f16 or f32");
    }
  }
  if (p.n_threads < 0) {
    bad("threads must be >= 0, got " + std::to_string(p.n_threads));
  }
  if (p.kv_streams == KvStreams::PerSequence && p.edit_route == EditRoute::OneCell) {
    bad("a cache with a stream per sequence needs the full-sequence edit route (--edit-route "
        "full): the one-cell route shares a cell with a scratch sequence");
  }
}

// ggml scheduler callback: asks for every "<name>-<il>" tensor of a captured name and keeps the
// values of the ubatch's last token (the last layer's l_out has only the output rows). The token
// count comes from the known values per token: shapes alone cannot tell a one-token
// [head dim, n_head, 1] from a [row, n_tokens] tensor.
// The attention mask input behind layer 0's attention output: walks the sources of "kqv_out-0"
// back to the flash-attention or soft-max node and takes its mask, and behind a cast (flash
// attention reads an F16 copy) the F32 input itself, which stays valid for the whole graph.
const ggml_tensor* attention_mask(const ggml_tensor* t, int depth = 0) {
  if (t == nullptr || depth > 8) {
    return nullptr;
  }
  const ggml_tensor* mask = nullptr;
  if (t->op == GGML_OP_FLASH_ATTN_EXT) {
    mask = t->src[3];
  } else if (t->op == GGML_OP_SOFT_MAX) {
    mask = t->src[1];
  } else {
    for (const ggml_tensor* src : t->src) {
      if (const ggml_tensor* m = attention_mask(src, depth + 1)) {
        return m;
      }
    }
    return nullptr;
  }
  while (mask != nullptr && (mask->op == GGML_OP_CPY || mask->op == GGML_OP_CONT) &&
         mask->src[0] != nullptr) {
    mask = mask->src[0];
  }
  return mask;
}

// Reads the window from the mask: [n_kv, n_tokens (padded), 1, n_stream], F16 or F32, 0 where a
// token may attend and -inf where not. The call's last token is the last row with a visible cell.
void record_window(const ggml_tensor* mask, detail::TensorCapture& capture) {
  if (mask == nullptr || (mask->type != GGML_TYPE_F32 && mask->type != GGML_TYPE_F16) ||
      mask->ne[2] != 1 || mask->ne[3] != 1) {
    return;
  }
  const auto n_kv = static_cast<std::size_t>(mask->ne[0]);
  std::vector<float> row(n_kv);
  std::vector<ggml_fp16_t> half(mask->type == GGML_TYPE_F16 ? n_kv : 0);
  for (std::int64_t r = mask->ne[1] - 1; r >= 0; --r) {
    const std::size_t offset = static_cast<std::size_t>(r) * mask->nb[1];
    if (mask->type == GGML_TYPE_F16) {
      ggml_backend_tensor_get(const_cast<ggml_tensor*>(mask), half.data(), offset,
                              n_kv * sizeof(ggml_fp16_t));
      ggml_fp16_to_fp32_row(half.data(), row.data(), static_cast<std::int64_t>(n_kv));
    } else {
      ggml_backend_tensor_get(const_cast<ggml_tensor*>(mask), row.data(), offset,
                              n_kv * sizeof(float));
    }
    AttentionWindow w;
    w.n_kv = static_cast<std::int32_t>(n_kv);
    for (std::size_t j = 0; j < n_kv; ++j) {
      if (std::isfinite(row[j])) {
        w.visible_cells.push_back(static_cast<std::int32_t>(j));
      }
    }
    if (!w.visible_cells.empty()) {  // padding rows see nothing
      capture.last_window = std::move(w);
      capture.has_window = true;
      return;
    }
  }
}

// libllama's abort callback (a C callback, run on a compute thread): asks
// SessionParams::abort_callback, which must not let an exception cross into C.
bool ask_abort(void* data) noexcept {
  try {
    const auto& callback = *static_cast<const std::function<bool()>*>(data);
    return callback();
  } catch (...) {
    return false;
  }
}

bool capture_tensor(ggml_tensor* t, bool ask, void* user_data) {
  auto& capture = *static_cast<detail::TensorCapture*>(user_data);
  const std::string_view name(t->name);
  if (capture.window && name == "kqv_out-0") {
    if (ask) {
      return true;
    }
    record_window(attention_mask(t), capture);
    if (!capture.rows.count("kqv_out")) {
      return true;
    }
  }
  const std::size_t dash = name.rfind('-');
  if (dash == std::string_view::npos || dash + 1 >= name.size() ||
      name.find_first_not_of("0123456789", dash + 1) != std::string_view::npos) {
    return !ask;
  }
  const auto it = capture.rows.find(name.substr(0, dash));
  if (it == capture.rows.end()) {
    return !ask;
  }
  if (ask) {
    return true;
  }
  const int il = std::atoi(t->name + dash + 1);
  const std::size_t width = capture.width.find(it->first)->second;
  const auto n_values = static_cast<std::size_t>(ggml_nelements(t));
  if (il < 0 || static_cast<std::size_t>(il) >= it->second.size() || t->type != GGML_TYPE_F32 ||
      !ggml_is_contiguous(t) || n_values < width || n_values % width != 0) {
    return true;
  }
  std::vector<float>& row = it->second[static_cast<std::size_t>(il)];
  row.resize(width);
  ggml_backend_tensor_get(t, row.data(), (n_values - width) * sizeof(float), width * sizeof(float));
  capture.has = true;
  return true;
}

// Values per token of a captured tensor: queries and attention outputs span every query head,
// K/V rows the KV heads, everything else (l_out, attn_norm...) the residual width.
std::size_t capture_width(const ModelFingerprint& fp, std::string_view name) {
  if (name == "Qcur") {
    return static_cast<std::size_t>(fp.n_head) * static_cast<std::size_t>(fp.n_embd_head_k);
  }
  if (name == "kqv_out") {
    return static_cast<std::size_t>(fp.n_head) * static_cast<std::size_t>(fp.n_embd_head_v);
  }
  if (name == "Kcur") {
    return static_cast<std::size_t>(fp.n_embd_k_gqa);
  }
  if (name == "Vcur") {
    return static_cast<std::size_t>(fp.n_embd_v_gqa);
  }
  return static_cast<std::size_t>(fp.n_embd);
}

}  // namespace

void Session::set_control_vector(const std::vector<std::vector<float>>& directions,
                                 std::int32_t layer_first, std::int32_t layer_last) {
  const auto& fp = impl_->model->fingerprint();
  if (layer_first < 1 || layer_last < layer_first || layer_last >= fp.n_layer) {
    throw Error(ErrorCode::InvalidArgument,
                "control-vector layers must satisfy 1 <= first <= last < " +
                    std::to_string(fp.n_layer) + " (got " + std::to_string(layer_first) + ".." +
                    std::to_string(layer_last) + "; llama.cpp cannot steer layer 0)");
  }
  if (directions.size() != static_cast<std::size_t>(fp.n_layer)) {
    throw Error(ErrorCode::InvalidArgument, "control vector has " +
                                                std::to_string(directions.size()) +
                                                " layers, the model " + std::to_string(fp.n_layer));
  }
  const auto n_embd = static_cast<std::size_t>(fp.n_embd);
  // llama.cpp's buffer starts at layer 1.
  std::vector<float> data(n_embd * static_cast<std::size_t>(fp.n_layer - 1), 0.0f);
  for (std::int32_t il = layer_first; il <= layer_last; ++il) {
    const auto& row = directions[static_cast<std::size_t>(il)];
    if (row.size() != n_embd) {
      throw Error(ErrorCode::InvalidArgument, "control vector layer " + std::to_string(il) +
                                                  " has " + std::to_string(row.size()) +
                                                  " values, n_embd is " + std::to_string(n_embd));
    }
    for (float x : row) {
      if (!std::isfinite(x)) {
        throw Error(ErrorCode::InvalidArgument,
                    "control vector layer " + std::to_string(il) + " holds a non-finite value");
      }
    }
    std::copy(row.begin(), row.end(),
              data.begin() + static_cast<std::ptrdiff_t>(n_embd) * (il - 1));
  }
  if (llama_set_adapter_cvec(impl_->ctx.get(), data.data(), data.size(), fp.n_embd, layer_first,
                             layer_last) != 0) {
    detail::throw_backend("llama_set_adapter_cvec failed");
  }
}

void Session::clear_control_vector() {
  const auto& fp = impl_->model->fingerprint();
  if (llama_set_adapter_cvec(impl_->ctx.get(), nullptr, 0, fp.n_embd, -1, -1) != 0) {
    detail::throw_backend("llama_set_adapter_cvec (clear) failed");
  }
}

std::vector<std::vector<float>> Session::last_residual() const {
  if (!impl_->params.capture_residual) {
    throw Error(ErrorCode::InvalidArgument,
                "last_residual() needs SessionParams::capture_residual");
  }
  return last_captured("l_out");
}

AttentionWindow Session::last_attention_window() const {
  if (!impl_->params.capture_attention_window) {
    throw Error(ErrorCode::InvalidArgument,
                "last_attention_window() needs SessionParams::capture_attention_window");
  }
  if (!impl_->capture.has_window) {
    throw Error(ErrorCode::InvalidArgument, "last_attention_window(): nothing decoded yet");
  }
  return impl_->capture.last_window;
}

std::vector<std::vector<float>> Session::last_captured(std::string_view name) const {
  const auto it = impl_->capture.rows.find(name);
  if (it == impl_->capture.rows.end()) {
    throw Error(
        ErrorCode::InvalidArgument,
        "tensor " + std::string(name) + " is not captured (SessionParams::capture_tensors)");
  }
  if (!impl_->capture.has) {
    throw Error(ErrorCode::InvalidArgument, "last_captured(): nothing decoded yet");
  }
  return it->second;
}

Session::Session(std::shared_ptr<const Model> model, const SessionParams& params)
    : impl_(std::make_unique<Impl>()) {
  if (!model) {
    throw Error(ErrorCode::InvalidArgument, "Session needs a model");
  }
  validate(*model, params);
  Impl& s = *impl_;
  s.model = std::move(model);
  s.params = params;
  const bool one_cell = params.edit_route == EditRoute::OneCell;
  s.scratch_seq = one_cell ? static_cast<SeqId>(params.n_seq) : -1;

  auto cp = llama_context_default_params();
  cp.n_ctx = params.n_ctx;
  cp.n_batch = params.n_batch;
  cp.n_ubatch = params.n_batch;
  cp.n_seq_max = params.n_seq + (one_cell ? 1 : 0);
  const int hw = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  cp.n_threads = params.n_threads > 0 ? params.n_threads : hw;
  cp.n_threads_batch = cp.n_threads;
  cp.type_k = to_ggml(params.type_k);
  cp.type_v = to_ggml(params.type_v);
  cp.flash_attn_type = params.flash_attn == FlashAttn::On    ? LLAMA_FLASH_ATTN_TYPE_ENABLED
                       : params.flash_attn == FlashAttn::Off ? LLAMA_FLASH_ATTN_TYPE_DISABLED
                                                             : LLAMA_FLASH_ATTN_TYPE_AUTO;
  cp.kv_unified = params.kv_streams == KvStreams::Unified;
  cp.no_perf = true;
  std::vector<std::string> captured = params.capture_tensors;
  if (params.capture_residual) {
    captured.emplace_back("l_out");
  }
  for (const std::string& name : captured) {
    s.capture.rows[name].assign(static_cast<std::size_t>(s.model->fingerprint().n_layer), {});
    s.capture.width[name] = capture_width(s.model->fingerprint(), name);
  }
  s.capture.window = params.capture_attention_window;
  if (!captured.empty() || params.capture_attention_window) {
    cp.cb_eval = &capture_tensor;
    cp.cb_eval_user_data = &s.capture;
  }
  if (s.params.abort_callback) {
    // s.params lives in the Impl, which never moves, so the pointer stays valid.
    cp.abort_callback = &ask_abort;
    cp.abort_callback_data = &s.params.abort_callback;
  }
  detail::clear_last_llama_error();
  s.ctx.reset(llama_init_from_model(const_cast<llama_model*>(raw_model(*s.model)), cp));
  if (!s.ctx) {
    detail::throw_backend("cannot create a llama context (ctx-size " +
                          std::to_string(params.n_ctx) + ")");
  }
  s.mem = llama_get_memory(s.ctx.get());
  s.batch = detail::Batch(static_cast<std::int32_t>(params.n_batch));
  s.logits.assign(params.n_seq, {});
  s.has_logits.assign(params.n_seq, false);

  // llama-kv-cache.cpp: quantized K with a head size divisible by 64 is Hadamard-rotated.
  const char* rot_off = std::getenv("LLAMA_ATTN_ROT_DISABLE");
  s.k_rotated = is_quantized(params.type_k) && s.model->fingerprint().n_embd_head_k % 64 == 0 &&
                !(rot_off != nullptr && std::atoi(rot_off) != 0);

  // Blob blocks (kv/seq_blob.h) and where each layer lies in them.
  const auto& fp = s.model->fingerprint();
  const auto& swa = s.model->swa_layers();
  s.block_shapes = detail::block_shapes(fp.n_layer, static_cast<std::uint32_t>(fp.n_embd_k_gqa),
                                        static_cast<std::uint32_t>(fp.n_embd_v_gqa), swa);
  std::vector<std::size_t> filled(s.block_shapes.size(), 0);
  for (std::int32_t il = 0; il < fp.n_layer; ++il) {
    const std::size_t b = s.block_shapes.size() > 1 && swa[il] ? 1 : 0;
    s.layer_slots.push_back({b, filled[b]++});
  }
  s.self_test();
  // The self-test decodes; what it captured is not the caller's.
  s.capture.has = false;
  s.capture.has_window = false;
  for (auto& [name, rows] : s.capture.rows) {
    for (auto& row : rows) {
      row.clear();
    }
  }
}

Session::~Session() = default;
Session::Session(Session&&) noexcept = default;
Session& Session::operator=(Session&&) noexcept = default;

const Model& Session::model() const { return *impl_->model; }
const std::shared_ptr<const Model>& Session::model_ptr() const { return impl_->model; }
const SessionParams& Session::params() const { return impl_->params; }
namespace {

// The names of an enum's values as the CLI, config.json and Python spell them, in the order the
// error message lists them.
template <typename E, std::size_t N>
using NameTable = std::array<std::pair<std::string_view, E>, N>;

constexpr NameTable<FlashAttn, 3> kFlashAttnNames{
    {{"on", FlashAttn::On}, {"off", FlashAttn::Off}, {"auto", FlashAttn::Auto}}};
constexpr NameTable<KvStreams, 2> kKvStreamsNames{
    {{"unified", KvStreams::Unified}, {"per-sequence", KvStreams::PerSequence}}};
constexpr NameTable<EditRoute, 2> kEditRouteNames{
    {{"one-cell", EditRoute::OneCell}, {"full", EditRoute::FullSequence}}};

template <typename E, std::size_t N>
E parse_name(const NameTable<E, N>& table, const char* what, const std::string& name) {
  std::string accepted;
  for (std::size_t i = 0; i < N; ++i) {
    if (table[i].first == name) {
      return table[i].second;
    }
    accepted += (i == 0 ? "" : i + 1 == N ? " or " : ", ") + std::string(table[i].first);
  }
  throw Error(ErrorCode::InvalidArgument,
              std::string(what) + " must be " + accepted + ", got '" + name + "'");
}

template <typename E, std::size_t N>
const char* name_of(const NameTable<E, N>& table, E value) noexcept {
  for (const auto& [name, v] : table) {
    if (v == value) {
      return name.data();  // the table's literals are NUL-terminated
    }
  }
  return "?";
}

}  // namespace

FlashAttn parse_flash_attn(const std::string& name) {
  return parse_name(kFlashAttnNames, "flash_attn", name);
}
const char* flash_attn_name(FlashAttn fa) noexcept { return name_of(kFlashAttnNames, fa); }

KvStreams parse_kv_streams(const std::string& name) {
  return parse_name(kKvStreamsNames, "kv_streams", name);
}
const char* kv_streams_name(KvStreams streams) noexcept {
  return name_of(kKvStreamsNames, streams);
}

EditRoute parse_edit_route(const std::string& name) {
  return parse_name(kEditRouteNames, "edit_route", name);
}
const char* edit_route_name(EditRoute route) noexcept { return name_of(kEditRouteNames, route); }

SessionParams session_params(const Model& model, const SessionSettings& settings,
                             std::uint32_t n_seq) {
  if (settings.n_batch == 0) {
    throw Error(ErrorCode::InvalidArgument, "n_batch must be >= 1 (got 0)");
  }
  if (settings.n_threads < 0) {
    throw Error(ErrorCode::InvalidArgument,
                "threads must be >= 0 (0: all cores), got " + std::to_string(settings.n_threads));
  }
  SessionParams p;
  p.n_ctx = settings.n_ctx != 0
                ? settings.n_ctx
                : static_cast<std::uint32_t>(std::clamp(model.n_ctx_train(), 64, 8192));
  p.n_batch = std::min(settings.n_batch, p.n_ctx);
  p.n_seq = n_seq;
  p.n_threads = settings.n_threads;
  p.type_k = parse_kv_type(settings.type_k);
  p.type_v = parse_kv_type(settings.type_v);
  p.flash_attn = parse_flash_attn(settings.flash_attn);
  p.edit_route = parse_edit_route(settings.edit_route);
  p.kv_streams = parse_kv_streams(settings.kv_streams);
  if (p.kv_streams == KvStreams::PerSequence) {
    // The one-cell route shares a cell with a scratch sequence, which separate streams cannot.
    p.edit_route = EditRoute::FullSequence;
  }
  return p;
}

std::uint32_t Session::n_ctx() const { return llama_n_ctx(impl_->ctx.get()); }

std::uint32_t Session::n_ctx_seq() const { return llama_n_ctx_seq(impl_->ctx.get()); }
bool Session::k_rotated() const { return impl_->k_rotated; }

void Session::Impl::check_seq(SeqId seq) const {
  if (seq < 0 || static_cast<std::uint32_t>(seq) >= params.n_seq) {
    throw Error(ErrorCode::InvalidArgument, "sequence id " + std::to_string(seq) +
                                                " is outside [0, " + std::to_string(params.n_seq) +
                                                ")");
  }
}

void Session::clear() {
  llama_memory_clear(impl_->mem, true);
  std::fill(impl_->has_logits.begin(), impl_->has_logits.end(), false);
}

void Session::clear_sequence(SeqId seq) {
  impl_->check_seq(seq);
  llama_memory_seq_rm(impl_->mem, seq, -1, -1);
  impl_->has_logits[seq] = false;
}

void Session::keep_prefix(SeqId seq, Pos n) {
  impl_->check_seq(seq);
  if (n < 0) {
    throw Error(ErrorCode::InvalidArgument,
                "keep_prefix: n must be >= 0, got " + std::to_string(n));
  }
  llama_memory_seq_rm(impl_->mem, seq, n, -1);
  impl_->has_logits[seq] = false;
}

void Session::copy_sequence(SeqId src, SeqId dst) {
  impl_->check_seq(src);
  impl_->check_seq(dst);
  if (src == dst) {
    return;
  }
  if (impl_->params.kv_streams == KvStreams::PerSequence) {
    // llama.cpp copies a stream to another only at the next decode, so a state read (an edit)
    // before it would see the old cells, and the copy would then overwrite the edit. A state
    // restore copies now: the blob's cells land in dst's stream.
    const std::vector<std::uint8_t> blob = impl_->get_state(src);
    llama_memory_seq_rm(impl_->mem, dst, -1, -1);
    if (llama_memory_seq_pos_max(impl_->mem, src) >= 0) {
      impl_->set_state(dst, blob);
    }
  } else {
    llama_memory_seq_rm(impl_->mem, dst, -1, -1);
    llama_memory_seq_cp(impl_->mem, src, dst, -1, -1);
  }
  impl_->logits[dst] = impl_->logits[src];
  impl_->has_logits[dst] = impl_->has_logits[src];
}

Pos Session::next_pos(SeqId seq) const {
  impl_->check_seq(seq);
  return llama_memory_seq_pos_max(impl_->mem, seq) + 1;
}

void Session::decode(SeqId seq, std::span<const Token> tokens, bool logits_last) {
  const DecodeItem item{seq, tokens, logits_last};
  decode(std::span<const DecodeItem>(&item, 1));
}

void Session::decode(std::span<const DecodeItem> items) {
  for (const auto& item : items) {
    impl_->check_seq(item.seq);
    if (item.tokens.empty()) {
      throw Error(ErrorCode::InvalidArgument,
                  "nothing to decode for sequence " + std::to_string(item.seq));
    }
    for (Token t : item.tokens) {
      impl_->model->check_token(t);
    }
  }
  for (std::size_t i = 0; i < items.size(); ++i) {
    for (std::size_t j = i + 1; j < items.size(); ++j) {
      if (items[i].seq == items[j].seq) {
        throw Error(ErrorCode::InvalidArgument,
                    "sequence " + std::to_string(items[i].seq) + " appears twice in one decode");
      }
    }
  }
  impl_->decode_chunked(items);
}

void Session::Impl::decode_chunked(std::span<const DecodeItem> items) {
  std::vector<Pos> start(items.size());
  for (std::size_t i = 0; i < items.size(); ++i) {
    start[i] = llama_memory_seq_pos_max(mem, items[i].seq) + 1;
    has_logits[items[i].seq] = false;
    const std::size_t need = static_cast<std::size_t>(start[i]) + items[i].tokens.size();
    // Per-sequence streams hold n_ctx / n_seq cells each; a unified one n_ctx.
    if (need > llama_n_ctx_seq(ctx.get())) {
      throw Error(ErrorCode::InvalidArgument,
                  "sequence " + std::to_string(items[i].seq) + " would hold " +
                      std::to_string(need) + " tokens, more than the context (" +
                      std::to_string(llama_n_ctx_seq(ctx.get())) + "); raise --ctx-size");
    }
  }
  auto rollback = [&] {
    for (std::size_t i = 0; i < items.size(); ++i) {
      llama_memory_seq_rm(mem, items[i].seq, start[i], -1);
    }
  };
  // Tokens in item order; a chunk is full at n_batch tokens. Outputs are read after each call.
  struct Output {
    SeqId seq;
    std::int32_t index;
  };
  std::vector<Output> outputs;
  batch.clear();
  auto flush = [&] {
    if (batch.size() == 0) {
      return;
    }
    const std::int32_t rc = llama_decode(ctx.get(), batch.get());
    if (rc != 0) {
      rollback();
      if (rc == 1) {
        throw Error(ErrorCode::InvalidArgument,
                    "the KV cache is full (no free cells for the batch); raise --ctx-size");
      }
      if (rc == 2) {
        throw Error(ErrorCode::Cancelled, "decoding was aborted");
      }
      detail::throw_backend("llama_decode failed with code " + std::to_string(rc));
    }
    const auto n_vocab = static_cast<std::size_t>(model->n_vocab());
    for (const auto& out : outputs) {
      const float* row = llama_get_logits_ith(ctx.get(), out.index);
      if (row == nullptr) {
        detail::throw_backend("no logits for the last token");
      }
      logits[out.seq].assign(row, row + n_vocab);
      has_logits[out.seq] = true;
    }
    outputs.clear();
    batch.clear();
  };
  for (std::size_t i = 0; i < items.size(); ++i) {
    const auto& item = items[i];
    for (std::size_t t = 0; t < item.tokens.size(); ++t) {
      const bool want = item.logits_last && t + 1 == item.tokens.size();
      if (want) {
        outputs.push_back({item.seq, batch.size()});
      }
      batch.add(item.tokens[t], start[i] + static_cast<Pos>(t), item.seq, want);
      if (batch.size() == batch.capacity()) {
        flush();
      }
    }
  }
  flush();
}

std::span<const float> Session::logits(SeqId seq) const {
  impl_->check_seq(seq);
  if (!impl_->has_logits[seq]) {
    throw Error(ErrorCode::InvalidArgument,
                "sequence " + std::to_string(seq) + " has no logits: decode it with logits_last");
  }
  return impl_->logits[seq];
}

std::vector<KvCell> Session::read_cells(SeqId seq) {
  impl_->check_seq(seq);
  return impl_->read_cells(seq);
}

KvCell Session::read_cell(SeqId seq, Pos pos) {
  impl_->check_seq(seq);
  return impl_->read_cell(seq, pos);
}

void Session::add_to_cell(SeqId seq, Pos pos, const CellDelta& delta) {
  impl_->check_seq(seq);
  impl_->add_to_cell(seq, pos, delta);
}

std::vector<std::uint8_t> Session::sequence_state(SeqId seq) {
  impl_->check_seq(seq);
  return impl_->get_state(seq);
}

llama_context* raw_context(Session& session) { return session.impl().ctx.get(); }

}  // namespace kvsteer
