// kvsteer.generate, kvsteer.Generation and kvsteer.kv_cell.
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <algorithm>

#include "bindings.h"

namespace kvsteer::py {
namespace {

using namespace nb::literals;

struct PyGeneration {
  Generation g;
  std::vector<Token> prompt_tokens;
  bool steered = false;
};

// `kvsteer generate --json`'s keys (tools/cli/cmd_generate.cpp).
nb::dict generation_dict(const PyGeneration& r) {
  nb::dict d;
  d["text"] = r.g.text;
  d["tokens"] = r.g.tokens;
  d["n_prompt"] = r.g.n_prompt;
  d["n_generated"] = r.g.tokens.size();
  d["stop_reason"] = stop_reason_name(r.g.stop_reason);
  d["steered"] = r.steered;
  d["prompt_tokens"] = r.prompt_tokens;
  d["ttft_ms"] = r.g.ttft_ms;
  return d;
}

struct GenerateArgs {
  SteerArgs steer;
  PromptArgs prompt;
  SessionSettings session;
  GenerationParams gen;
  std::uint32_t parallel = 8;
};

std::vector<PyGeneration> generate_all(const std::shared_ptr<const Model>& model,
                                       const std::vector<std::vector<Token>>& prompts,
                                       const SteeringVector* vector, GenerateArgs& a,
                                       nb::object progress) {
  if (a.parallel < 1 || a.parallel > 512) {
    throw Error(ErrorCode::InvalidArgument,
                "parallel must be in [1, 512], got " + std::to_string(a.parallel));
  }
  if (a.gen.n_predict < 1) {
    throw Error(ErrorCode::InvalidArgument,
                "n_predict must be >= 1, got " + std::to_string(a.gen.n_predict));
  }
  const SteeringParams sp = a.steer.params(*model);
  const auto n_seq = static_cast<std::uint32_t>(std::min<std::size_t>(a.parallel, prompts.size()));
  SessionParams params = session_params(*model, a.session, n_seq);
  const Progress progress_fn = progress_adaptor(std::move(progress));
  return run_long([&](LongCall& call) {
    params.abort_callback = call.abort_callback();
    Session session(model, params);
    if (vector != nullptr) check_applicable(*vector, session);
    const Progress report = cancellable(progress_fn, call);
    std::vector<PyGeneration> out;
    // Chunks of n_seq prompts, one sequence each, decoded together.
    for (std::size_t begin = 0; begin < prompts.size(); begin += n_seq) {
      const std::size_t end = std::min(prompts.size(), begin + n_seq);
      std::vector<GenerationRequest> requests;
      for (std::size_t i = begin; i < end; ++i) {
        requests.push_back({static_cast<SeqId>(i - begin), prompts[i], vector, sp});
      }
      std::vector<Generation> gens = generate(session, requests, a.gen);
      for (std::size_t i = begin; i < end; ++i) {
        out.push_back({std::move(gens[i - begin]), prompts[i], vector != nullptr});
      }
      report(end, prompts.size());
    }
    return out;
  });
}

}  // namespace

void bind_generate(nb::module_& m) {
  nb::class_<PyGeneration>(m, "Generation", "One prompt's generated text.")
      .def_prop_ro(
          "text", [](const PyGeneration& r) { return r.g.text; },
          "Generated text (the offset token's text first when one was decoded).")
      .def_prop_ro(
          "tokens", [](const PyGeneration& r) { return r.g.tokens; },
          "Generated token ids (offset token excluded).")
      .def_prop_ro(
          "stop_reason", [](const PyGeneration& r) { return stop_reason_name(r.g.stop_reason); },
          "'eog', 'stop_string' or 'length'.")
      .def_prop_ro(
          "n_prompt", [](const PyGeneration& r) { return r.g.n_prompt; }, "Prompt tokens.")
      .def_prop_ro(
          "ttft_ms", [](const PyGeneration& r) { return r.g.ttft_ms; },
          "Time to first token of the batch the prompt was decoded in.")
      .def_ro("prompt_tokens", &PyGeneration::prompt_tokens, "The decoded prompt's token ids.")
      .def_ro("steered", &PyGeneration::steered, "Whether a vector was applied.")
      .def("to_dict", &generation_dict,
           "The keys of `kvsteer generate --json` (text, tokens, n_prompt, n_generated, "
           "stop_reason, steered, prompt_tokens) and ttft_ms.")
      .def("__repr__", [](const PyGeneration& r) {
        return "kvsteer.Generation(" + std::to_string(r.g.tokens.size()) + " tokens, " +
               stop_reason_name(r.g.stop_reason) + ")";
      });

  m.def(
      "generate",
      [](const PyModel& model, nb::object prompts, nb::object steer, std::optional<float> c_k,
         std::optional<float> c_v, std::optional<std::string> layers,
         std::optional<std::string> layers_k, std::optional<std::string> layers_v,
         std::optional<std::string> offset, std::optional<Token> offset_id, std::int32_t n_predict,
         float temperature, std::int32_t top_k, float top_p, float min_p, std::uint32_t seed,
         std::vector<std::string> stop, bool stop_at_eog, bool raw, const std::string& system,
         std::optional<std::string> prompt_family, const std::string& chat_template,
         const std::string& cot_prefix, std::uint32_t parallel, std::uint32_t n_ctx,
         std::uint32_t n_batch, std::int32_t n_threads, const std::string& type_k,
         const std::string& type_v, const std::string& flash_attn, const std::string& edit_route,
         const std::string& kv_streams, nb::object progress) -> nb::object {
        GenerateArgs a;
        a.steer = {c_k,
                   c_v,
                   std::move(layers),
                   std::move(layers_k),
                   std::move(layers_v),
                   std::move(offset),
                   offset_id};
        a.prompt = {system, std::move(prompt_family), chat_template, cot_prefix, raw};
        a.session = {n_ctx, n_batch, n_threads, type_k, type_v, flash_attn, edit_route, kv_streams};
        a.gen.n_predict = n_predict;
        a.gen.stop_strings = std::move(stop);
        a.gen.stop_at_eog = stop_at_eog;
        if (!(temperature >= 0.0f) || !(top_p >= 0.0f && top_p <= 1.0f) || top_k < 0 ||
            !(min_p >= 0.0f && min_p <= 1.0f)) {
          throw Error(ErrorCode::InvalidArgument,
                      "sampling needs temperature >= 0, top_k >= 0, 0 <= top_p <= 1 and "
                      "0 <= min_p <= 1");
        }
        a.gen.sampling = {temperature, top_k, top_p, min_p, seed};
        a.parallel = parallel;
        const bool single =
            nb::isinstance<nb::str>(prompts) || is_conversation(prompts) ||
            (nb::len(prompts) > 0 && nb::isinstance<nb::int_>(prompts[nb::int_(0)]));
        std::vector<std::vector<Token>> tokens;
        if (single) {
          tokens.push_back(a.prompt.tokens(*model.model, prompts));
        } else {
          for (nb::handle p : prompts) tokens.push_back(a.prompt.tokens(*model.model, p));
        }
        if (tokens.empty()) throw Error(ErrorCode::InvalidArgument, "no prompts");
        const VectorArg vector = vector_arg(steer);
        if (!vector.get()) a.steer.check_without_vector();
        std::vector<PyGeneration> out =
            generate_all(model.model, tokens, vector.get(), a, std::move(progress));
        if (single) return nb::cast(std::move(out.front()));
        nb::list list;
        for (PyGeneration& g : out) list.append(nb::cast(std::move(g)));
        return list;
      },
      "model"_a, "prompts"_a, "steer"_a = nb::none(), nb::kw_only(), "c_k"_a = nb::none(),
      "c_v"_a = nb::none(), "layers"_a = nb::none(), "layers_k"_a = nb::none(),
      "layers_v"_a = nb::none(), nb::arg("offset").none() = "\n", "offset_id"_a = nb::none(),
      "n_predict"_a = 256, "temperature"_a = 0.0f, "top_k"_a = 0, "top_p"_a = 1.0f,
      "min_p"_a = 0.0f, "seed"_a = 1234, "stop"_a = std::vector<std::string>{},
      "stop_at_eog"_a = true, "raw"_a = false, "system"_a = "", "prompt_family"_a = nb::none(),
      "chat_template"_a = "", "cot_prefix"_a = "", "parallel"_a = 8, "n_ctx"_a = 0,
      "n_batch"_a = 512, "n_threads"_a = 0, "type_k"_a = "f16", "type_v"_a = "f16",
      "flash_attn"_a = "auto", "edit_route"_a = "one-cell", "kv_streams"_a = "unified",
      "progress"_a = nb::none(),
      R"doc(Generates for one prompt or many, optionally steered once through the KV cache.

prompts: a str (the user turn, rendered as `kvsteer generate -p` renders it;
raw=True tokenizes it as is), a conversation (a list of {'role', 'content'}
dicts, rendered with the same template and the generation prompt; system= and
raw=True are refused with it), a list of token ids, or a list of any of these; a
single prompt returns one Generation, a list returns a list.

steer: a SteeringVector or a vector file path; None = unsteered (the offset token
is still decoded, so steered and unsteered runs see the same tokens). The edit
adds c_k*S_k[l] and c_v*S_v[l] (None: c_k 0, c_v 1) to the last prompt cell in
the selected layers (layers, or layers_k / layers_v: None or '1-' = layers >= 1,
'all', '3,5', '2-6'), then
the offset token (text whose first token is used; offset_id by id; None: edit the
second-last prompt token and decode the last) is decoded and generation starts.

Sampling: temperature 0 = greedy; top_k 0, top_p 1, min_p 0 = off; seed. Stops at
n_predict tokens, an end-of-generation token (stop_at_eog) or a stop string.

parallel prompts are decoded together as sequences of one context (n_ctx cells,
0 = the model's training context up to 8192, shared). On CPU the batch
composition changes the last bits, so a greedy near-tie can differ from a run of
the same prompt alone; kv_streams='per-sequence' gives each prompt its own cache
stream (n_ctx / parallel cells each), where its cells lie as they would alone and
long generations decode faster. progress: callable(done, total) or a tqdm bar, after
each batch. The GIL is released while decoding; Ctrl-C raises KeyboardInterrupt.
Raises InvalidArgumentError for bad values (non-finite c_k/c_v, bad layers,
c_k, c_v or layers given without steer, unknown tokens, a
prompt longer than n_ctx) and FormatError for a vector of another model.)doc");

  m.def(
      "kv_cell",
      [](const PyModel& model, nb::object prompt, Pos pos, nb::object steer, Pos steer_pos,
         std::optional<float> c_k, std::optional<float> c_v, std::optional<std::string> layers,
         bool raw, const std::string& system, std::optional<std::string> prompt_family,
         const std::string& chat_template, std::uint32_t n_ctx, std::int32_t n_threads,
         const std::string& type_k, const std::string& type_v, const std::string& flash_attn) {
        const Model& mdl = *model.model;
        PromptArgs pa{system, std::move(prompt_family), chat_template, "", raw};
        std::vector<Token> tokens = pa.tokens(mdl, prompt);
        const auto len = static_cast<Pos>(tokens.size());
        auto resolve = [len](Pos p, const char* what) {
          const Pos r = p < 0 ? len + p : p;
          if (r < 0 || r >= len) {
            throw Error(ErrorCode::InvalidArgument, std::string(what) + " " + std::to_string(p) +
                                                        " is outside the prompt (" +
                                                        std::to_string(len) + " tokens)");
          }
          return r;
        };
        const Pos at = resolve(pos, "pos");
        const VectorArg vector = vector_arg(steer);
        std::optional<CellDelta> delta;
        Pos steer_at = -1;
        const SteerArgs sa{c_k,          c_v,          std::move(layers), std::nullopt,
                           std::nullopt, std::nullopt, std::nullopt};
        if (vector.get() != nullptr) {
          delta = steering_delta(*vector.get(), sa.params(mdl));
          steer_at = resolve(steer_pos, "steer_pos");
        } else {
          sa.check_without_vector();
        }
        SessionSettings args{n_ctx, 512, n_threads, type_k, type_v, flash_attn, "one-cell"};
        SessionParams sp = session_params(mdl, args, 1);
        if (tokens.size() > sp.n_ctx) {
          throw Error(ErrorCode::InvalidArgument, "prompt has " + std::to_string(tokens.size()) +
                                                      " tokens, more than n_ctx " +
                                                      std::to_string(sp.n_ctx));
        }
        KvCell cell = run_long([&](LongCall& call) {
          sp.abort_callback = call.abort_callback();
          Session session(model.model, sp);
          session.decode(0, tokens, false);
          if (delta) {
            check_applicable(*vector.get(), session);
            session.add_to_cell(0, steer_at, *delta);
          }
          return session.read_cell(0, at);
        });
        const Token token = tokens[static_cast<std::size_t>(at)];
        return make_kv_cell(cell, mdl.fingerprint(), token, std::move(tokens));
      },
      "model"_a, "prompt"_a, "pos"_a = -1, nb::kw_only(), "steer"_a = nb::none(),
      "steer_pos"_a = -1, "c_k"_a = nb::none(), "c_v"_a = nb::none(), "layers"_a = nb::none(),
      "raw"_a = false, "system"_a = "", "prompt_family"_a = nb::none(), "chat_template"_a = "",
      "n_ctx"_a = 0, "n_threads"_a = 0, "type_k"_a = "f16", "type_v"_a = "f16",
      "flash_attn"_a = "auto",
      R"doc(K and V of one cache cell after prefilling prompt, every layer (`kvsteer kv-dump`).

prompt: a str (rendered as in generate; raw=True as is), a conversation (as in
generate) or token ids. pos: the
cell, negative from the end (-1: the last prompt token). steer: a vector (or
path) added first at steer_pos with c_k, c_v, layers (as in generate; given
without steer they are refused). Returns a KvCell with
keys [n_layer, n_embd_k_gqa] and values [n_layer, n_embd_v_gqa] as float32.)doc");
}

}  // namespace kvsteer::py
