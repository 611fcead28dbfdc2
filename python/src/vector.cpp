// kvsteer.SteeringVector (files, numpy views and arrays) and kvsteer.extract.
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <cmath>

#include "bindings.h"
#include "eval/pairs_file.h"
#include "eval/trace_extraction.h"

namespace kvsteer::py {
namespace {

using namespace nb::literals;
using Array2 = nb::ndarray<const float, nb::ndim<2>, nb::c_contig, nb::device::cpu>;

std::string fspath(nb::handle path) {
  return nb::cast<std::string>(nb::module_::import_("os").attr("fspath")(path));
}

// Per-layer numpy views of a vector's rows: no copy; each view keeps the Python SteeringVector
// alive. The rows are never resized after a vector is made, so the views stay valid.
nb::list row_views(nb::handle self, bool keys) {
  SteeringVector& v = *nb::inst_ptr<SteeringVector>(self);
  std::vector<std::vector<float>>& rows = keys ? v.k : v.v;
  static float empty = 0.0f;  // numpy wants a pointer even for zero elements
  nb::list out;
  for (std::vector<float>& row : rows) {
    float* data = row.empty() ? &empty : row.data();
    out.append(nb::ndarray<nb::numpy, float, nb::ndim<1>>(data, {row.size()}, self).cast());
  }
  return out;
}

nb::dict metadata_dict(const SteeringVector& v) {
  nb::dict d;
  d["format_version"] = kVectorFormatVersion;
  d["model"] = fingerprint_dict(v.model);
  d["position"] = v.info.position;
  d["n_pairs"] = v.info.n_pairs;
  d["n_shots"] = v.info.n_shots;
  d["traces_sha256"] = v.info.traces_sha256;
  d["chat_template"] = v.info.chat_template;
  d["kv_type_k"] = v.info.kv_type_k;
  d["k_rotated"] = v.info.k_rotated;
  d["source"] = v.info.source;
  return d;
}

// Rows of a [n_layer][width] array: a row that is all NaN means "not extracted" (to_numpy's
// convention) and becomes empty; any other non-finite value is refused.
std::vector<std::vector<float>> rows_from_array(const Array2& a, std::int32_t n_layer,
                                                std::int32_t width, const char* what) {
  if (a.shape(0) != static_cast<std::size_t>(n_layer) ||
      a.shape(1) != static_cast<std::size_t>(width)) {
    throw Error(ErrorCode::InvalidArgument,
                std::string(what) + " has shape (" + std::to_string(a.shape(0)) + ", " +
                    std::to_string(a.shape(1)) + "), the model needs (" + std::to_string(n_layer) +
                    ", " + std::to_string(width) + ") = (n_layer, n_embd_" +
                    (what[0] == 'k' ? "k" : "v") + "_gqa)");
  }
  std::vector<std::vector<float>> rows(static_cast<std::size_t>(n_layer));
  for (std::size_t il = 0; il < rows.size(); ++il) {
    const float* row = a.data() + il * a.shape(1);
    const bool missing = std::all_of(row, row + width, [](float x) { return std::isnan(x); });
    if (missing) continue;
    for (std::int32_t i = 0; i < width; ++i) {
      if (!std::isfinite(row[i])) {
        throw Error(ErrorCode::InvalidArgument,
                    std::string(what) + " row " + std::to_string(il) +
                        " holds a non-finite value at " + std::to_string(i) +
                        " (a row of all NaN marks a layer without a vector)");
      }
    }
    rows[il].assign(row, row + width);
  }
  return rows;
}

template <typename T>
T meta_value(const nb::dict& d, const char* key, T fallback) {
  if (!d.contains(key) || d[key].is_none()) return fallback;
  try {
    return nb::cast<T>(d[key]);
  } catch (const nb::cast_error&) {
    throw Error(ErrorCode::Format, std::string("metadata '") + key + "' has the wrong type");
  }
}

SteeringVector from_numpy(const Array2& keys, const Array2& values, nb::handle model,
                          nb::handle metadata) {
  nb::dict meta;
  if (!metadata.is_none()) {
    if (!nb::isinstance<nb::dict>(metadata)) {
      throw Error(ErrorCode::InvalidArgument, "metadata must be a dict");
    }
    meta = nb::borrow<nb::dict>(metadata);
  }
  SteeringVector v;
  if (!model.is_none()) {
    v.model = nb::cast<const PyModel&>(model).model->fingerprint();
    if (meta.contains("model")) {
      const std::string diff = fingerprint_from_dict(meta["model"]).mismatch(v.model);
      if (!diff.empty()) {
        throw Error(ErrorCode::Format, "the vector was made for another model: " + diff);
      }
    }
  } else if (meta.contains("model")) {
    v.model = fingerprint_from_dict(meta["model"]);
  } else {
    throw Error(ErrorCode::InvalidArgument,
                "from_numpy needs model= or metadata['model'] (a fingerprint) to check shapes");
  }
  v.k = rows_from_array(keys, v.model.n_layer, v.model.n_embd_k_gqa, "keys");
  v.v = rows_from_array(values, v.model.n_layer, v.model.n_embd_v_gqa, "values");
  v.info.position = meta_value<Pos>(meta, "position", -1);
  v.info.n_pairs = meta_value<std::uint32_t>(meta, "n_pairs", 0);
  v.info.n_shots = meta_value<std::uint32_t>(meta, "n_shots", 0);
  v.info.traces_sha256 = meta_value<std::string>(meta, "traces_sha256", "");
  v.info.chat_template = meta_value<std::string>(meta, "chat_template", "");
  v.info.kv_type_k = meta_value<std::string>(meta, "kv_type_k", "f16");
  v.info.k_rotated = meta_value<bool>(meta, "k_rotated", false);
  v.info.source = meta_value<std::string>(meta, "source", "imported from numpy");
  return v;
}

struct ExtractArgs {
  bool from_traces = false;  // x.traces given; else pairs_file or explicit pairs
  eval::TraceExtraction x;
  std::optional<eval::PairsFileExtraction> pairs_file;
  nb::object pairs;
  std::vector<Pos> positions;
  std::uint32_t parallel = 4;
  SessionSettings session;
  std::optional<std::string> checkpoint;  // as `kvsteer extract --checkpoint`
  double checkpoint_every = 30;
};

// Pairs given as (positive, negative): rendered prompt texts (tokenized with the BOS rule), token
// id lists, or conversations (rendered with the template of `x`'s prompt family or chat template).
std::vector<ContrastivePair> explicit_pairs(const Model& model, nb::handle pairs,
                                            const eval::TraceExtraction& x) {
  PromptArgs as_is;
  as_is.raw = true;
  const PromptArgs chat{
      "", x.prompt_family.empty() ? std::nullopt : std::optional<std::string>(x.prompt_family),
      x.chat_template, "", false};
  const auto side = [&](nb::handle prompt) {
    return (is_conversation(prompt) ? chat : as_is).tokens(model, prompt);
  };
  std::vector<ContrastivePair> out;
  for (nb::handle pair : pairs) {
    if (nb::len(pair) != 2) {
      throw Error(ErrorCode::InvalidArgument, "each pair must be (positive, negative)");
    }
    out.push_back({side(pair[0]), side(pair[1])});
  }
  if (out.empty()) throw Error(ErrorCode::InvalidArgument, "pairs is empty");
  return out;
}

// The same steps, session and provenance as `kvsteer extract` (tools/cli/cmd_extract.cpp), so
// that the same settings give the same vector bytes.
std::vector<SteeringVector> extract(const std::shared_ptr<const Model>& model, const ExtractArgs& a,
                                    nb::object progress) {
  if (a.parallel < 1 || a.parallel > 64) {
    throw Error(ErrorCode::InvalidArgument,
                "parallel must be in [1, 64], got " + std::to_string(a.parallel));
  }
  if (int(a.from_traces) + int(a.pairs_file.has_value()) + int(!a.pairs.is_none()) != 1) {
    throw Error(ErrorCode::InvalidArgument,
                "give one of traces (a JSONL path), pairs_file (a JSONL path) or pairs");
  }
  eval::ContrastiveSet set;
  if (a.from_traces) {
    set = eval::contrastive_set(*model, a.x);
  } else if (a.pairs_file) {
    set = eval::contrastive_set_from_pairs_file(*model, *a.pairs_file).set;
  } else {
    set.pairs = explicit_pairs(*model, a.pairs, a.x);
  }
  SessionParams sp = eval::extraction_session(*model, a.session, a.parallel, set.pairs);
  const Progress report = progress_adaptor(std::move(progress));
  if (a.checkpoint_every < 0) {
    throw Error(ErrorCode::InvalidArgument, "checkpoint_every must be >= 0 seconds");
  }
  std::vector<std::string> warnings;  // raised once the GIL is held again
  std::optional<eval::ExtractionCheckpointFile> file;
  std::vector<SteeringVector> vectors = run_long([&](LongCall& call) {
    sp.abort_callback = call.abort_callback();
    Session session(model, sp);
    ExtractionParams params;
    params.progress = cancellable(report, call);
    if (a.checkpoint) {
      file.emplace(*a.checkpoint, a.checkpoint_every,
                   extraction_identity(session, set.pairs, a.positions),
                   [&warnings](const std::string& why) { warnings.push_back(why); });
      file->attach(params);
    }
    return extract_steering_vectors(session, set.pairs, a.positions, params);
  });
  for (const std::string& why : warnings) {
    if (PyErr_WarnEx(PyExc_RuntimeWarning, why.c_str(), 1) != 0) throw nb::python_error();
  }
  for (std::size_t i = 0; i < vectors.size(); ++i) {
    if (a.from_traces) {
      // The CLI's provenance, so that the file is the one `kvsteer extract` writes (tested byte
      // for byte).
      eval::record_provenance(vectors[i], a.x, set, a.positions[i], a.parallel, sp.n_batch);
    } else if (a.pairs_file) {
      eval::record_pairs_file_provenance(vectors[i], *a.pairs_file, set, a.positions[i], a.parallel,
                                         sp.n_batch);
    } else {
      vectors[i].info.source =
          "kvsteer.extract(pairs=...)" +
          (a.positions[i] == -1 ? "" : " --position " + std::to_string(a.positions[i])) +
          " --parallel " + std::to_string(a.parallel) + " --batch-size " +
          std::to_string(sp.n_batch);
    }
  }
  // The caller saves the vectors; the checkpoint has served once they exist in memory.
  if (file) file->remove();
  return vectors;
}

}  // namespace

void bind_vector(nb::module_& m) {
  nb::class_<SteeringVector>(
      m, "SteeringVector",
      R"doc(A KV cache steering vector: per layer, the mean (positive - negative) cached K and V row.

keys / values are lists of per-layer numpy views (no copy) into the vector;
writing to them changes the vector. Copy with clone(); files with load/save
(kvsteer's GGUF format, docs/vector-format.md).)doc")
      .def_static(
          "load",
          [](nb::handle path) {
            const std::string p = fspath(path);
            nb::gil_scoped_release release;
            return load_steering_vector(p);
          },
          "path"_a,
          "Reads a vector file. Raises NotFoundError for a missing file and FormatError for a "
          "file that is not a kvsteer vector or has a newer format version.")
      .def(
          "save",
          [](const SteeringVector& v, nb::handle path) {
            const std::string p = fspath(path);
            nb::gil_scoped_release release;
            save_steering_vector(p, v);
          },
          "path"_a,
          "Writes the vector atomically (a temporary file renamed over path). Raises IoError.")
      .def_prop_ro(
          "keys", [](nb::handle self) { return row_views(self, true); },
          "[n_layer] numpy float32 views [n_embd_k_gqa] (zero-copy; empty: layer not "
          "extracted). Head-major, post-RoPE, in llama.cpp's K layout.")
      .def_prop_ro(
          "values", [](nb::handle self) { return row_views(self, false); },
          "[n_layer] numpy float32 views [n_embd_v_gqa] (zero-copy).")
      .def_prop_ro(
          "fingerprint", [](const SteeringVector& v) { return fingerprint_dict(v.model); },
          "The model the vector was made for (see Model.fingerprint).")
      .def_prop_ro(
          "metadata", &metadata_dict,
          "Format version, model fingerprint and extraction settings (position, n_pairs, "
          "n_shots, traces_sha256, chat_template, kv_type_k, k_rotated, source), as a new dict.")
      .def_prop_ro("n_layer", [](const SteeringVector& v) { return v.model.n_layer; })
      .def(
          "to_numpy",
          [](const SteeringVector& v) {
            return nb::make_tuple(dense_rows(v.k, static_cast<std::size_t>(v.model.n_embd_k_gqa)),
                                  dense_rows(v.v, static_cast<std::size_t>(v.model.n_embd_v_gqa)));
          },
          "(keys, values): new float32 arrays [n_layer, n_embd_k_gqa] and [n_layer, "
          "n_embd_v_gqa]; a layer without a vector is a row of NaN.")
      .def_static("from_numpy", &from_numpy, "keys"_a, "values"_a, nb::kw_only(),
                  "model"_a = nb::none(), "metadata"_a = nb::none(),
                  R"doc(A vector from arrays [n_layer, n_embd_k_gqa] and [n_layer, n_embd_v_gqa]
(converted to float32; all-NaN rows = layers without a vector).

The shapes are checked against model (a kvsteer.Model) or, without one, against
metadata['model'] (a fingerprint dict, as in .metadata); with both, the two
must describe the same model (FormatError otherwise). Other metadata keys
(position, n_pairs, ...) fill the extraction record. Raises
InvalidArgumentError for wrong shapes or non-finite values. Keys computed
outside llama.cpp must be in its layout (post-RoPE, llama.cpp's head-dim order).)doc")
      .def(
          "check",
          [](const SteeringVector& v, const PyModel& model) {
            const std::string diff = v.model.mismatch(model.model->fingerprint());
            if (!diff.empty()) {
              throw Error(ErrorCode::Format, "the vector was made for another model: " + diff);
            }
          },
          "model"_a, "Raises FormatError when the vector does not fit model.")
      .def("clone", &SteeringVector::clone, "A deep copy.")
      .def("__repr__", [](const SteeringVector& v) {
        return "kvsteer.SteeringVector(" + v.model.arch +
               ", n_layer=" + std::to_string(v.model.n_layer) +
               ", n_pairs=" + std::to_string(v.info.n_pairs) +
               ", position=" + std::to_string(v.info.position) + ")";
      });

  m.def(
      "extract",
      [](const PyModel& model, std::optional<std::string> traces, nb::object pairs,
         nb::object pairs_file, bool raw, std::optional<std::string> task,
         std::optional<std::size_t> n_pairs, std::optional<std::size_t> shots,
         std::optional<std::string> fewshot_map, std::optional<std::string> prompt_family,
         const std::string& chat_template, const std::string& cot_prefix, nb::object position,
         std::uint32_t parallel, std::uint32_t n_ctx, std::uint32_t n_batch, std::int32_t n_threads,
         const std::string& type_k, const std::string& type_v, const std::string& flash_attn,
         nb::object progress, nb::object checkpoint, double checkpoint_every) -> nb::object {
        ExtractArgs a;
        if (!checkpoint.is_none()) a.checkpoint = fspath(checkpoint);
        a.checkpoint_every = checkpoint_every;
        a.from_traces = traces.has_value();
        a.x.traces = traces.value_or("");
        a.pairs = std::move(pairs);
        if (!a.from_traces) {
          // Settings of a traces extraction, which pairs given otherwise would silently ignore.
          const char* unused = task          ? "task"
                               : shots       ? "shots"
                               : fewshot_map ? "fewshot_map"
                               : pairs_file.is_none() && !cot_prefix.empty()
                                   ? "cot_prefix (append it to the pairs' texts)"
                               : pairs_file.is_none() && n_pairs ? "n_pairs (slice the list)"
                                                                 : nullptr;
          if (unused != nullptr) {
            throw Error(ErrorCode::InvalidArgument,
                        std::string(unused) + " applies to traces, not to " +
                            (pairs_file.is_none() ? "pairs" : "pairs_file"));
          }
        }
        if (!pairs_file.is_none()) {
          if (n_pairs == std::size_t{0}) {
            throw Error(ErrorCode::InvalidArgument,
                        "n_pairs must be at least 1 (None: every pair of the file)");
          }
          a.pairs_file = eval::PairsFileExtraction{
              fspath(pairs_file),         n_pairs.value_or(0), raw,
              prompt_family.value_or(""), chat_template,       cot_prefix};
        } else if (raw) {
          throw Error(ErrorCode::InvalidArgument, "raw applies to pairs_file only");
        }
        a.x.task = task.value_or("generic");
        a.x.n_pairs = n_pairs.value_or(100);
        a.x.shots = shots.value_or(5);
        a.x.fewshot_map = fewshot_map.value_or("");
        a.x.prompt_family = prompt_family.value_or("");
        a.x.chat_template = chat_template;
        a.x.cot_prefix = cot_prefix;
        a.parallel = parallel;
        a.session = {n_ctx, n_batch, n_threads, type_k, type_v, flash_attn, "one-cell"};
        const bool many = !nb::isinstance<nb::int_>(position);
        if (many) {
          a.positions = nb::cast<std::vector<Pos>>(position);
          if (a.positions.empty()) throw Error(ErrorCode::InvalidArgument, "position is empty");
        } else {
          a.positions = {nb::cast<Pos>(position)};
        }
        std::vector<SteeringVector> vectors = extract(model.model, a, std::move(progress));
        if (!many) return nb::cast(std::move(vectors.front()));
        nb::list out;
        for (SteeringVector& v : vectors) out.append(nb::cast(std::move(v)));
        return out;
      },
      "model"_a, "traces"_a = nb::none(), nb::kw_only(), "pairs"_a = nb::none(),
      "pairs_file"_a = nb::none(), "raw"_a = false, "task"_a = nb::none(), "n_pairs"_a = nb::none(),
      "shots"_a = nb::none(), "fewshot_map"_a = nb::none(), "prompt_family"_a = nb::none(),
      "chat_template"_a = "", "cot_prefix"_a = "", "position"_a = -1, "parallel"_a = 4,
      "n_ctx"_a = 0, "n_batch"_a = 512, "n_threads"_a = 0, "type_k"_a = "f16", "type_v"_a = "f16",
      "flash_attn"_a = "auto", "progress"_a = nb::none(), "checkpoint"_a = nb::none(),
      "checkpoint_every"_a = 30.0,
      R"doc(Extracts a steering vector from contrastive prompt pairs (paper §1.2-1.3).

From traces (a JSONL of query|question, steps, solution), as `kvsteer extract`:
the first n_pairs rows (None: 100), each with `shots` (None: 5) in-context
neighbours (fewshot_map, or the lexical fallback) answered with steps (positive)
or directly (negative), rendered with the prompt family / chat template; task
(None: 'generic') formats the questions ('generic', 'arc', 'csqa', 'piqa',
'gsm8k'). The same settings give the same vector bytes as the CLI. task, shots
and fewshot_map are refused with pairs_file or pairs; cot_prefix and n_pairs
with pairs.

Or from pairs_file, as `kvsteer extract --pairs-file`: a JSONL of
{"positive": P, "negative": N}, each side a user turn (a string, rendered with
the chat template as generate renders a str prompt; as it is with raw=True) or
a list of {"role", "content"} messages (rendered with the template and its
generation prompt); the first n_pairs pairs (None: all). Both sides should end
alike: the cell read holds the last token's own row too.

Or from pairs: [(positive, negative), ...] of rendered prompt texts, token id
lists or conversations (lists of {'role', 'content'} dicts, rendered with the
prompt family / chat template and the generation prompt).

position: the cell read, from the end of each prompt (-1: the last token); a
list gives one vector per position from one pass. parallel prompts are decoded
together (their rounding is part of the result: llama.cpp's CPU kernels depend
on the batch). progress: callable(done, total) or a tqdm bar. The GIL is
released; Ctrl-C raises KeyboardInterrupt and nothing is written.

checkpoint: a file path. The running sums are saved there at most every
checkpoint_every seconds; a call with the same settings after an interruption
(Ctrl-C, a kill) goes on from it, and it is removed when the call returns.
A damaged file or another extraction's raises a RuntimeWarning and is replaced.)doc");
}

}  // namespace kvsteer::py
