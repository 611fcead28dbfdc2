// The extension module kvsteer._kvsteer: libllama's backend, error translation, Ctrl-C handling.
// The public Python names live in python/kvsteer/__init__.py.
#include <signal.h>

#include <cstring>

#include "bindings.h"

namespace kvsteer::py {
namespace {

// The flag of the main-thread call that holds the SIGINT handler now (nullptr: none), and the
// handler it replaced. Only lock-free atomics are touched in the handler (async-signal-safe).
std::atomic<std::atomic<bool>*> g_active{nullptr};
struct sigaction g_previous;

void on_sigint(int sig, siginfo_t* info, void* context) {
  if (std::atomic<bool>* flag = g_active.load()) flag->store(true);
  // Then Python's own handler, which only records the signal: KeyboardInterrupt (or the user's
  // handler) follows when the interpreter runs again.
  if ((g_previous.sa_flags & SA_SIGINFO) != 0) {
    if (g_previous.sa_sigaction != nullptr) g_previous.sa_sigaction(sig, info, context);
  } else if (g_previous.sa_handler != SIG_DFL && g_previous.sa_handler != SIG_IGN) {
    g_previous.sa_handler(sig);
  }
}

bool on_main_thread() {
  nb::module_ threading = nb::module_::import_("threading");
  return threading.attr("main_thread")().attr("ident").equal(threading.attr("get_ident")());
}

const char* error_class_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::InvalidArgument:
      return "InvalidArgumentError";
    case ErrorCode::NotFound:
      return "NotFoundError";
    case ErrorCode::Io:
      return "IoError";
    case ErrorCode::Format:
      return "FormatError";
    case ErrorCode::Unsupported:
      return "UnsupportedError";
    case ErrorCode::Backend:
      return "BackendError";
    case ErrorCode::Cancelled:
      return "CancelledError";
  }
  return "Error";
}

void translate_error(const std::exception_ptr& p, void*) {
  try {
    std::rethrow_exception(p);
  } catch (const Error& e) {
    // The classes are plain Python (kvsteer/_errors.py) so that they can inherit from the
    // builtin exceptions (ValueError, FileNotFoundError, ...) that callers already catch.
    PyObject* cls = PyExc_RuntimeError;
    nb::object errors;
    try {
      errors = nb::module_::import_("kvsteer._errors");
    } catch (const nb::python_error&) {
      PyErr_Clear();
    }
    nb::object found;
    if (errors.is_valid()) found = nb::getattr(errors, error_class_name(e.code()), nb::none());
    if (found.is_valid() && !found.is_none()) cls = found.ptr();
    PyErr_SetString(cls, e.what());
  }
}

}  // namespace

LongCall::LongCall() {
  if (!on_main_thread()) return;
  std::atomic<bool>* expected = nullptr;
  if (!g_active.compare_exchange_strong(expected, &flag_)) return;  // an outer call holds it
  struct sigaction current;
  sigaction(SIGINT, nullptr, &current);
  // Only where Python's handler (or the user's) is installed: SIG_IGN means "ignore Ctrl-C".
  const bool has_handler = (current.sa_flags & SA_SIGINFO) != 0 ||
                           (current.sa_handler != SIG_DFL && current.sa_handler != SIG_IGN);
  if (!has_handler) {
    g_active.store(nullptr);
    return;
  }
  struct sigaction ours;
  std::memset(&ours, 0, sizeof ours);
  ours.sa_sigaction = &on_sigint;
  ours.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&ours.sa_mask);
  g_previous = current;
  sigaction(SIGINT, &ours, nullptr);
  installed_ = true;
}

LongCall::~LongCall() { restore(); }

void LongCall::restore() noexcept {
  if (!installed_) return;
  sigaction(SIGINT, &g_previous, nullptr);
  g_active.store(nullptr);
  installed_ = false;
}

std::function<bool()> LongCall::abort_callback() const {
  const std::atomic<bool>* flag = &flag_;
  return [flag] { return flag->load(std::memory_order_relaxed); };
}

void LongCall::check() const {
  if (interrupted()) throw Error(ErrorCode::Cancelled, "interrupted (Ctrl-C)");
}

Progress progress_adaptor(nb::object progress) {
  if (progress.is_none()) return {};
  // The Python object is shared by copies of the function and released with the GIL held.
  struct Target {
    nb::object object;
    bool callable = false;
    std::size_t reported = 0;
    ~Target() {
      nb::gil_scoped_acquire gil;
      object.reset();
    }
  };
  auto target = std::make_shared<Target>();
  target->callable = PyCallable_Check(progress.ptr()) != 0;
  if (!target->callable && !nb::hasattr(progress, "update")) {
    throw Error(ErrorCode::InvalidArgument,
                "progress must be a callable(done, total) or have update(n) (a tqdm bar)");
  }
  target->object = std::move(progress);
  return [target](std::size_t done, std::size_t total) {
    nb::gil_scoped_acquire gil;
    if (target->callable) {
      target->object(done, total);
      return;
    }
    if (nb::hasattr(target->object, "total") && target->object.attr("total").is_none()) {
      target->object.attr("total") = total;
    }
    if (done > target->reported) target->object.attr("update")(done - target->reported);
    target->reported = done;
  };
}

Progress cancellable(Progress progress, const LongCall& call) {
  const std::atomic<bool>* flag = call.flag();
  return [progress = std::move(progress), flag](std::size_t done, std::size_t total) {
    if (flag->load(std::memory_order_relaxed)) {
      throw Error(ErrorCode::Cancelled, "interrupted (Ctrl-C)");
    }
    if (progress) progress(done, total);
  };
}

nb::object json_to_python(const std::string& dump) {
  return nb::module_::import_("json").attr("loads")(dump);
}

nb::dict fingerprint_dict(const ModelFingerprint& fp) {
  nb::dict d;
  d["arch"] = fp.arch;
  d["n_layer"] = fp.n_layer;
  d["n_head"] = fp.n_head;
  d["n_head_kv"] = fp.n_head_kv;
  d["n_embd"] = fp.n_embd;
  d["n_embd_head_k"] = fp.n_embd_head_k;
  d["n_embd_head_v"] = fp.n_embd_head_v;
  d["n_embd_k_gqa"] = fp.n_embd_k_gqa;
  d["n_embd_v_gqa"] = fp.n_embd_v_gqa;
  d["rope_type"] = fp.rope_type;
  d["n_vocab"] = fp.n_vocab;
  d["vocab_hash"] = fp.vocab_hash;
  return d;
}

ModelFingerprint fingerprint_from_dict(nb::handle d) {
  if (!nb::isinstance<nb::dict>(d)) {
    throw Error(ErrorCode::Format, "the model fingerprint must be a dict");
  }
  nb::dict dict = nb::borrow<nb::dict>(d);
  auto field = [&dict](const char* key) -> nb::handle {
    if (!dict.contains(key)) {
      throw Error(ErrorCode::Format, std::string("the model fingerprint has no '") + key + "'");
    }
    return dict[key];
  };
  auto integer = [&field](const char* key) {
    try {
      return nb::cast<std::int32_t>(field(key));
    } catch (const nb::cast_error&) {
      throw Error(ErrorCode::Format,
                  std::string("the model fingerprint's '") + key + "' is not an integer");
    }
  };
  auto text = [&field](const char* key) {
    try {
      return nb::cast<std::string>(field(key));
    } catch (const nb::cast_error&) {
      throw Error(ErrorCode::Format,
                  std::string("the model fingerprint's '") + key + "' is not a string");
    }
  };
  ModelFingerprint fp;
  fp.arch = text("arch");
  fp.n_layer = integer("n_layer");
  fp.n_head = integer("n_head");
  fp.n_head_kv = integer("n_head_kv");
  fp.n_embd = integer("n_embd");
  fp.n_embd_head_k = integer("n_embd_head_k");
  fp.n_embd_head_v = integer("n_embd_head_v");
  fp.n_embd_k_gqa = integer("n_embd_k_gqa");
  fp.n_embd_v_gqa = integer("n_embd_v_gqa");
  fp.rope_type = text("rope_type");
  fp.n_vocab = integer("n_vocab");
  fp.vocab_hash = text("vocab_hash");
  return fp;
}

void bind_errors(nb::module_& m) {
  (void)m;
  nb::register_exception_translator(&translate_error);
}

}  // namespace kvsteer::py

NB_MODULE(_kvsteer, m) {
  using namespace kvsteer;
  namespace nb = nanobind;
  m.doc() = "kvsteer's C++ core (private: import kvsteer instead).";
  // One Backend for the process, made before any other call and never freed: freeing it at
  // interpreter exit could race with objects that the garbage collector has not released yet.
  static Backend* backend = new Backend(LogLevel::Error);
  (void)backend;
  m.def(
      "set_log_level",
      [](const std::string& level) {
        static const std::pair<const char*, LogLevel> kLevels[] = {{"silent", LogLevel::Silent},
                                                                   {"error", LogLevel::Error},
                                                                   {"warn", LogLevel::Warn},
                                                                   {"info", LogLevel::Info},
                                                                   {"debug", LogLevel::Debug}};
        for (const auto& [name, value] : kLevels) {
          if (level == name) {
            Backend::set_log_level(value);
            return;
          }
        }
        throw Error(ErrorCode::InvalidArgument, "log level '" + level +
                                                    "' is not one of silent, error, warn, "
                                                    "info, debug");
      },
      nb::arg("level"),
      "How much of libllama's log reaches stderr: 'silent', 'error' (the default), 'warn', "
      "'info' or 'debug'.");
  m.def("cpu_features", &Backend::cpu_features,
        "The instruction sets libllama's CPU backend was built with ('CPU : SSE3 = 1 | AVX = 1 | "
        "AVX2 = 1 | ...'), as `kvsteer info --engine` prints them: greedy answers depend on "
        "them, and eval, sweep and diagnose record them as engine_cpu_features.");
  py::bind_errors(m);
  py::bind_model(m);
  py::bind_vector(m);
  py::bind_generate(m);
  py::bind_runners(m);
}
