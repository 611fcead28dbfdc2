// kvsteer.Model, kvsteer.Session and kvsteer.KvCell.
#include <nanobind/stl/optional.h>
#include <nanobind/stl/vector.h>

#include <limits>

#include "bindings.h"

namespace kvsteer::py {
namespace {

using namespace nb::literals;

std::string fspath(nb::handle path) {
  return nb::cast<std::string>(nb::module_::import_("os").attr("fspath")(path));
}

// A user-made Session, with the slot through which the call running on it can stop it.
struct PySession {
  std::optional<Session> session;
  // Flag of the LongCall now decoding on this session (nullptr: none); read by abort_callback.
  std::shared_ptr<std::atomic<const std::atomic<bool>*>> abort_slot =
      std::make_shared<std::atomic<const std::atomic<bool>*>>(nullptr);

  Session& get() {
    if (!session) {
      throw Error(ErrorCode::InvalidArgument, "the session is closed");
    }
    return *session;
  }
};

struct PyKvCell {
  Pos pos = -1;
  Token token = -1;                  // token at pos (-1 when unknown)
  nb::object keys, values;           // [n_layer][n_embd_k_gqa], [n_layer][n_embd_v_gqa]
  std::vector<Token> prompt_tokens;  // the decoded prompt (kv_cell)
};

}  // namespace

// Messages as dicts {"role": ..., "content": ...} (the Hugging Face habit) or (role, content).
std::vector<ChatMessage> chat_messages(nb::handle messages) {
  const auto text = [](nb::handle v) {
    if (!nb::isinstance<nb::str>(v)) {
      throw Error(ErrorCode::InvalidArgument, "a chat message's role and content must be str");
    }
    return nb::cast<std::string>(v);
  };
  std::vector<ChatMessage> out;
  for (nb::handle m : messages) {
    if (nb::isinstance<nb::dict>(m)) {
      nb::dict d = nb::borrow<nb::dict>(m);
      if (!d.contains("role") || !d.contains("content")) {
        throw Error(ErrorCode::InvalidArgument, "a chat message needs 'role' and 'content'");
      }
      out.push_back({text(d["role"]), text(d["content"])});
    } else if (nb::isinstance<nb::tuple>(m) && nb::len(m) == 2) {
      out.push_back({text(m[0]), text(m[1])});
    } else {
      throw Error(ErrorCode::InvalidArgument,
                  "a chat message must be a dict with 'role' and 'content' or a (role, content) "
                  "tuple");
    }
  }
  return out;
}

nb::object dense_rows(const std::vector<std::vector<float>>& rows, std::size_t width) {
  const std::size_t n = rows.size();
  auto* data = new float[std::max<std::size_t>(1, n * width)];
  for (std::size_t i = 0; i < n; ++i) {
    float* out = data + i * width;
    if (rows[i].empty()) {
      std::fill(out, out + width, std::numeric_limits<float>::quiet_NaN());
    } else {
      std::copy(rows[i].begin(), rows[i].end(), out);
    }
  }
  nb::capsule owner(data, [](void* p) noexcept { delete[] static_cast<float*>(p); });
  return nb::ndarray<nb::numpy, float, nb::ndim<2>>(data, {n, width}, owner).cast();
}

nb::object make_kv_cell(const KvCell& cell, const ModelFingerprint& fp, Token token,
                        std::vector<Token> prompt_tokens) {
  PyKvCell out;
  out.pos = cell.pos;
  out.token = token;
  out.keys = dense_rows(cell.k, static_cast<std::size_t>(fp.n_embd_k_gqa));
  out.values = dense_rows(cell.v, static_cast<std::size_t>(fp.n_embd_v_gqa));
  out.prompt_tokens = std::move(prompt_tokens);
  return nb::cast(std::move(out));
}

void bind_model(nb::module_& m) {
  nb::class_<PyModel>(m, "Model",
                      R"doc(A GGUF model loaded by libllama: weights, vocabulary and chat template.

Immutable; thread-safe (several threads and Sessions may share one Model).
Raises NotFoundError for a missing file, FormatError for a file libllama cannot
load and UnsupportedError for architectures whose cache kvsteer cannot steer.)doc")
      .def(
          "__init__",
          [](PyModel* self, nb::handle path, std::int32_t n_gpu_layers, bool use_mmap,
             bool vocab_only) {
            ModelParams mp;
            mp.n_gpu_layers = n_gpu_layers;
            mp.use_mmap = use_mmap;
            mp.vocab_only = vocab_only;
            const std::string p = fspath(path);
            std::shared_ptr<const Model> model;
            {
              nb::gil_scoped_release release;
              model = load_model(p, mp);
            }
            new (self) PyModel{std::move(model)};
          },
          "path"_a, nb::kw_only(), "n_gpu_layers"_a = 0, "use_mmap"_a = true,
          "vocab_only"_a = false,
          "Loads a GGUF file (vocab_only: tokenizer and template only, no decoding).")
      .def_prop_ro(
          "path", [](const PyModel& s) { return s.model->path(); }, "The GGUF file.")
      .def_prop_ro(
          "fingerprint", [](const PyModel& s) { return fingerprint_dict(s.model->fingerprint()); },
          "Layout identity of the KV cache (arch, n_layer, n_head_kv, n_embd_k_gqa, ...): a "
          "steering vector applies only to models with the same fingerprint.")
      .def_prop_ro("n_layer", [](const PyModel& s) { return s.model->n_layer(); })
      .def_prop_ro("n_vocab", [](const PyModel& s) { return s.model->n_vocab(); })
      .def_prop_ro("n_ctx_train", [](const PyModel& s) { return s.model->n_ctx_train(); })
      .def_prop_ro("n_params", [](const PyModel& s) { return s.model->n_params(); })
      .def_prop_ro("size_bytes", [](const PyModel& s) { return s.model->size_bytes(); })
      .def_prop_ro(
          "description", [](const PyModel& s) { return s.model->description(); },
          "libllama's one-line description, e.g. 'llama 135M Q4_1'.")
      .def_prop_ro(
          "chat_template", [](const PyModel& s) { return s.model->chat_template(); },
          "The GGUF's tokenizer.chat_template ('' when it has none).")
      .def_prop_ro("bos", [](const PyModel& s) { return s.model->bos(); })
      .def(
          "meta", [](const PyModel& s, const std::string& key) { return s.model->try_meta(key); },
          "key"_a, "A GGUF metadata value as text, or None when the key is absent.")
      .def(
          "tokenize",
          [](const PyModel& s, const std::string& text, bool add_special, bool parse_special) {
            return s.model->tokenize(text, add_special, parse_special);
          },
          "text"_a, "add_special"_a = false, "parse_special"_a = true,
          "Token ids of text. add_special adds BOS/EOS as the vocabulary asks; parse_special "
          "turns special-token text such as '<|im_start|>' into its token.")
      .def(
          "tokenize_prompt",
          [](const PyModel& s, const std::string& text) { return s.model->tokenize_prompt(text); },
          "text"_a,
          "Token ids of a rendered prompt with kvsteer's one BOS rule (what every command "
          "decodes): special text parsed, BOS first when the vocabulary asks for one and the "
          "text does not begin with it.")
      .def(
          "detokenize",
          [](const PyModel& s, const std::vector<Token>& tokens, bool render_special) {
            for (Token t : tokens) s.model->check_token(t);
            return s.model->detokenize(tokens, render_special);
          },
          "tokens"_a, "render_special"_a = true,
          "Text of token ids. Raises InvalidArgumentError for an id outside the vocabulary.")
      .def(
          "token_to_piece",
          [](const PyModel& s, Token token, bool render_special) {
            s.model->check_token(token);
            return s.model->token_to_piece(token, render_special);
          },
          "token"_a, "render_special"_a = true, "Text of one token.")
      .def(
          "is_eog",
          [](const PyModel& s, Token token) {
            s.model->check_token(token);
            return s.model->is_eog(token);
          },
          "token"_a, "Whether token ends generation (EOS, EOT, <|im_end|>, ...).")
      .def(
          "apply_chat_template",
          [](const PyModel& s, nb::handle messages, bool add_generation_prompt,
             const std::string& chat_template) {
            const auto msgs = chat_messages(messages);
            return s.model->apply_chat_template(msgs, add_generation_prompt, chat_template);
          },
          "messages"_a, "add_generation_prompt"_a = true, "chat_template"_a = "",
          R"doc(Renders messages with libllama's renderer of the model's template, or of
chat_template (a built-in name such as 'chatml' or template text) when given.

messages: dicts {'role': ..., 'content': ...} or (role, content) tuples.
Raises UnsupportedError for a template libllama cannot render. See render_prompt
for the prompts kvsteer's commands decode (reference renders of SmolLM2/Qwen2).)doc")
      .def(
          "render_prompt",
          [](const PyModel& s, nb::handle prompt, const std::string& system,
             std::optional<std::string> prompt_family, const std::string& chat_template,
             const std::string& cot_prefix, bool raw) {
            PromptArgs args{system, std::move(prompt_family), chat_template, cot_prefix, raw};
            if (is_conversation(prompt)) {
              return args.render_conversation(*s.model, prompt);
            }
            return args.render(*s.model, nb::cast<std::string>(prompt));
          },
          "prompt"_a, nb::kw_only(), "system"_a = "", "prompt_family"_a = nb::none(),
          "chat_template"_a = "", "cot_prefix"_a = "", "raw"_a = false,
          R"doc(The text `kvsteer generate -p PROMPT` decodes: the user turn (after an optional
system turn) rendered with the reference template of prompt_family ('llama32',
'llama31', 'qwen2', 'smollm2', 'phi4mini', 'chatml'; detected from the model's
template when None and no chat_template is given) or by libllama, with the
generation prompt and cot_prefix appended. raw=True returns prompt + cot_prefix.
A conversation (a list of {'role', 'content'} dicts) is rendered the same way,
as generate decodes it.)doc")
      .def("__repr__", [](const PyModel& s) {
        return "kvsteer.Model('" + s.model->path() + "', " + s.model->description() + ")";
      });

  nb::class_<PyKvCell>(m, "KvCell", "K and V of one cache cell, every layer, as float32.")
      .def_ro("pos", &PyKvCell::pos, "Position of the cell in its sequence.")
      .def_ro("token", &PyKvCell::token, "Token at pos (-1 when unknown).")
      .def_ro("keys", &PyKvCell::keys,
              "numpy float32 [n_layer, n_embd_k_gqa], head-major as llama.cpp stores it "
              "(post-RoPE; Hadamard-rotated for quantized K caches). NaN rows: layers whose "
              "cache does not hold the cell (sliding window).")
      .def_ro("values", &PyKvCell::values, "numpy float32 [n_layer, n_embd_v_gqa].")
      .def_ro("prompt_tokens", &PyKvCell::prompt_tokens, "The decoded prompt's token ids.");

  nb::class_<PySession>(m, "Session",
                        R"doc(A llama context over one Model: decode tokens, read cache cells.

Sequences 0 .. n_seq-1 share one cache of n_ctx cells. Thread-compatible: one
Session is used by one thread at a time. close() (or a with-block) frees the
context now; otherwise it is freed with the object.)doc")
      .def(
          "__init__",
          [](PySession* self, const PyModel& model, std::uint32_t n_ctx, std::uint32_t n_seq,
             std::uint32_t n_batch, std::int32_t n_threads, const std::string& type_k,
             const std::string& type_v, const std::string& flash_attn,
             const std::string& edit_route, const std::string& kv_streams) {
            SessionSettings args{n_ctx,  n_batch,    n_threads,  type_k,
                                 type_v, flash_attn, edit_route, kv_streams};
            SessionParams sp = session_params(*model.model, args, n_seq);
            auto slot = std::make_shared<std::atomic<const std::atomic<bool>*>>(nullptr);
            sp.abort_callback = [slot] {
              const std::atomic<bool>* flag = slot->load();
              return flag != nullptr && flag->load(std::memory_order_relaxed);
            };
            std::optional<Session> session;
            {
              nb::gil_scoped_release release;
              session.emplace(model.model, sp);
            }
            // Made only now: nanobind does not destroy a half-initialised object.
            new (self) PySession{std::move(session), std::move(slot)};
          },
          "model"_a, nb::kw_only(), "n_ctx"_a = 0, "n_seq"_a = 1, "n_batch"_a = 512,
          "n_threads"_a = 0, "type_k"_a = "f16", "type_v"_a = "f16", "flash_attn"_a = "auto",
          "edit_route"_a = "one-cell", "kv_streams"_a = "unified",
          "n_ctx 0: the model's training context, at most 8192. type_k/type_v: 'f32', 'f16', "
          "'bf16', 'q8_0', 'q4_0'. flash_attn: 'on', 'off', 'auto'. edit_route: 'one-cell' or "
          "'full'. kv_streams: 'unified' or 'per-sequence' (a cache stream per sequence, "
          "n_ctx / n_seq cells each; implies edit_route 'full').")
      .def_prop_ro("n_ctx", [](PySession& s) { return s.get().n_ctx(); })
      .def_prop_ro("n_seq", [](PySession& s) { return s.get().params().n_seq; })
      .def_prop_ro("closed", [](const PySession& s) { return !s.session.has_value(); })
      .def(
          "decode",
          [](PySession& s, const std::vector<Token>& tokens, SeqId seq, bool logits) {
            Session& session = s.get();
            run_long([&](LongCall& call) {
              s.abort_slot->store(call.flag());
              struct Reset {
                PySession& s;
                ~Reset() { s.abort_slot->store(nullptr); }
              } reset{s};
              session.decode(seq, tokens, logits);
              return 0;
            });
          },
          "tokens"_a, "seq"_a = 0, "logits"_a = true,
          "Appends tokens to sequence seq (GIL released; Ctrl-C stops it and the sequence keeps "
          "what it held before the interrupted decode call). Raises InvalidArgumentError for a "
          "bad seq, no tokens, an id outside the vocabulary or a full cache.")
      .def(
          "logits",
          [](PySession& s, SeqId seq) {
            const std::span<const float> l = s.get().logits(seq);
            auto* data = new float[std::max<std::size_t>(1, l.size())];
            std::copy(l.begin(), l.end(), data);
            nb::capsule owner(data, [](void* p) noexcept { delete[] static_cast<float*>(p); });
            return nb::ndarray<nb::numpy, float, nb::ndim<1>>(data, {l.size()}, owner);
          },
          "seq"_a = 0, "Next-token logits of the last token decoded in seq: float32 [n_vocab].")
      .def(
          "read_cell",
          [](PySession& s, Pos pos, SeqId seq) {
            Session& session = s.get();
            KvCell cell;
            {
              nb::gil_scoped_release release;
              cell = session.read_cell(seq, pos);
            }
            return make_kv_cell(cell, session.model().fingerprint(), -1, {});
          },
          "pos"_a, "seq"_a = 0, "K and V of the cell at pos in seq.")
      .def(
          "next_pos", [](PySession& s, SeqId seq) { return s.get().next_pos(seq); }, "seq"_a = 0,
          "Position the next token of seq gets.")
      .def(
          "clear",
          [](PySession& s, std::optional<SeqId> seq) {
            if (seq) {
              s.get().clear_sequence(*seq);
            } else {
              s.get().clear();
            }
          },
          "seq"_a = nb::none(), "Empties seq, or every sequence.")
      .def(
          "close", [](PySession& s) { s.session.reset(); }, "Frees the context now.")
      .def("__enter__", [](nb::handle self) { return nb::borrow(self); })
      .def("__exit__", [](PySession& s, nb::args) { s.session.reset(); });
}

}  // namespace kvsteer::py
