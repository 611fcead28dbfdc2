// Shared pieces of the Python extension module `kvsteer._kvsteer`: the wrapped objects, long calls
// that release the GIL and stop on Ctrl-C, progress adaptors and conversions.
#pragma once

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>

#include <atomic>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "kvsteer/kvsteer.h"

namespace kvsteer::py {

namespace nb = nanobind;

// kvsteer.Model. A Model is immutable and shared by the Sessions made from it.
struct PyModel {
  std::shared_ptr<const Model> model;
};

// One call from Python that may run long (decoding). Made with the GIL held. While it lives, and
// only when it was made on the main thread, SIGINT sets its flag (then reaches Python's own
// handler, so KeyboardInterrupt is raised as usual once the call returns); sessions made for the
// call stop decoding through abort_callback() when the flag is set. Other threads' calls are not
// interrupted, as Python delivers KeyboardInterrupt only to the main thread.
class LongCall {
 public:
  LongCall();
  ~LongCall();
  LongCall(const LongCall&) = delete;
  LongCall& operator=(const LongCall&) = delete;

  bool interrupted() const noexcept { return flag_.load(std::memory_order_relaxed); }
  // For SessionParams::abort_callback; valid while this call lives.
  std::function<bool()> abort_callback() const;
  // Throws Error(Cancelled) when interrupted: checked between the steps of a call.
  void check() const;
  // Puts the previous SIGINT handler back (also done by the destructor).
  void restore() noexcept;
  const std::atomic<bool>* flag() const noexcept { return &flag_; }

 private:
  std::atomic<bool> flag_{false};
  bool installed_ = false;
};

// Runs f(call) with the GIL released. A Cancelled error caused by Ctrl-C becomes Python's
// KeyboardInterrupt (the interpreter's SIGINT handler runs, as it would have without us); other
// errors propagate (nanobind translates kvsteer::Error to kvsteer.Error subclasses). f must not
// touch Python objects except through callbacks that take the GIL themselves.
template <typename F>
auto run_long(F&& f) -> decltype(f(std::declval<LongCall&>())) {
  LongCall call;
  try {
    nb::gil_scoped_release release;
    return f(call);
  } catch (const Error& e) {
    if (e.code() == ErrorCode::Cancelled && call.interrupted()) {
      call.restore();
      if (PyErr_CheckSignals() != 0) throw nb::python_error();
    }
    throw;
  }
}

// (done, total) progress for the C++ library from a Python object: a callable taking (done,
// total), or a tqdm-like object with update(n) (given the increase) and, when it has one, a total
// attribute set from the first report. None gives an empty function. Made with the GIL held; the
// returned function takes the GIL for each report.
using Progress = std::function<void(std::size_t, std::size_t)>;
Progress progress_adaptor(nb::object progress);
// progress (may be empty) that first throws Error(Cancelled) when call was interrupted, so that
// a Ctrl-C stops the library between its steps even where no decode is running.
Progress cancellable(Progress progress, const LongCall& call);

// Rows as a new float32 numpy array [rows.size()][width]; empty rows (layers that hold nothing)
// become NaN rows, so the array always has one row per layer.
nb::object dense_rows(const std::vector<std::vector<float>>& rows, std::size_t width);

// A kvsteer.KvCell from a cell of a model with this fingerprint.
nb::object make_kv_cell(const KvCell& cell, const ModelFingerprint& fp, Token token,
                        std::vector<Token> prompt_tokens);

// A nlohmann JSON dump as Python objects (json.loads).
nb::object json_to_python(const std::string& dump);

// Fingerprint <-> dict.
nb::dict fingerprint_dict(const ModelFingerprint& fp);
ModelFingerprint fingerprint_from_dict(nb::handle d);

// SessionParams from the keyword arguments shared by the functions that decode. n_ctx 0: the
// model's training context clamped to [64, 8192] (as the CLI). Throws Error(InvalidArgument).

// Messages as dicts {"role": ..., "content": ...} (the Hugging Face habit) or (role, content)
// tuples. Throws Error(InvalidArgument) for anything else.
std::vector<ChatMessage> chat_messages(nb::handle messages);

// A prompt that is a conversation: a non-empty list whose first item is a dict.
bool is_conversation(nb::handle prompt);

// Text of a user prompt as the CLI renders it (`kvsteer generate -p`): the model's chat template,
// or the reference render of the detected or given prompt family; raw text unless `raw` is false.
// A conversation is rendered with the same template (eval::render_conversation); `raw` and
// `system` are refused with it (its messages hold the system turn, if any).
struct PromptArgs {
  std::string system;
  std::optional<std::string> prompt_family;
  std::string chat_template;
  std::string cot_prefix;
  bool raw = false;
  std::string render(const Model& model, const std::string& user) const;
  std::string render_conversation(const Model& model, nb::handle messages) const;
  // A str (a user turn), a conversation, or token ids (decoded as they are).
  std::vector<Token> tokens(const Model& model, nb::handle prompt) const;
};

// Steering application (`kvsteer generate --ck ...`); offset None = no offset token. The
// coefficients and layers are None when not given (c_k 0, c_v 1, layers "1-"), so that one given
// without a vector can be told from the default, whatever its value.
struct SteerArgs {
  std::optional<float> coef_k;
  std::optional<float> coef_v;
  std::optional<std::string> layers;
  std::optional<std::string> layers_k, layers_v;
  std::optional<std::string> offset = std::string("\n");
  std::optional<Token> offset_id;
  SteeringParams params(const Model& model) const;
  // Throws Error(InvalidArgument) when a coefficient or layer selection is given although no
  // vector is: the call would run unsteered and look steered.
  void check_without_vector() const;
};

// A vector argument: a kvsteer.SteeringVector, a path, or None.
struct VectorArg {
  const SteeringVector* borrowed = nullptr;  // a kvsteer.SteeringVector argument (kept alive by it)
  std::optional<SteeringVector> loaded;      // read from a path
  const SteeringVector* get() const { return loaded ? &*loaded : borrowed; }
};
VectorArg vector_arg(nb::handle steer);

void bind_errors(nb::module_& m);
void bind_model(nb::module_& m);
void bind_vector(nb::module_& m);
void bind_generate(nb::module_& m);
void bind_runners(nb::module_& m);

}  // namespace kvsteer::py
