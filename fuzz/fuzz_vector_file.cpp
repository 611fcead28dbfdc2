// The steering-vector loader (src/io/vector_file.cpp) on arbitrary files: ggml's GGUF reader,
// then kvsteer's checks of the type, format version, fingerprint, extraction keys and per-layer
// tensors. A file is either refused with Error(Format) or gives a vector that holds its
// invariants, saves, and loads back identical.
#include <cmath>
#include <cstdlib>

#include "fuzz_util.h"
#include "kvsteer/backend.h"
#include "kvsteer/error.h"
#include "kvsteer/vector_file.h"

namespace {

using namespace kvsteer;

using fuzz::check;

void check_invariants(const SteeringVector& v) {
  const auto n_layer = static_cast<std::size_t>(v.model.n_layer);
  check(v.model.n_layer > 0 && v.k.size() == n_layer && v.v.size() == n_layer,
        "layer count differs from the fingerprint");
  std::size_t rows = 0;
  for (std::size_t il = 0; il < n_layer; ++il) {
    check(v.k[il].empty() || v.k[il].size() == static_cast<std::size_t>(v.model.n_embd_k_gqa),
          "K row width differs from n_embd_k_gqa");
    check(v.v[il].empty() || v.v[il].size() == static_cast<std::size_t>(v.model.n_embd_v_gqa),
          "V row width differs from n_embd_v_gqa");
    for (const auto* row : {&v.k[il], &v.v[il]}) {
      rows += row->empty() ? 0 : 1;
      for (float x : *row) check(std::isfinite(x), "a loaded value is not finite");
    }
  }
  check(rows > 0, "a loaded vector holds no rows");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // ggml logs every refused file at error level; keep the fuzzer's output readable.
  static Backend backend(LogLevel::Silent);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const fuzz::ScratchFile in("vector.gguf"), out("vector-again.gguf");
  SteeringVector v;
  try {
    v = load_steering_vector(in.write(fuzz::as_text(data, size)));
  } catch (const Error& e) {
    check(e.code() == ErrorCode::Format, "a bad file was refused with another code than Format");
    return 0;
  }
  check_invariants(v);
  (void)v.model.mismatch(v.model);
  save_steering_vector(out.path(), v);
  const SteeringVector again = load_steering_vector(out.path());
  check(again.k == v.k && again.v == v.v && again.model.mismatch(v.model).empty() &&
            again.info.source == v.info.source && again.info.position == v.info.position,
        "save then load does not give the same vector");
  return 0;
}
