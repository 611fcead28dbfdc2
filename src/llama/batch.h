// Move-only owner of a llama_batch (llama_batch_init / llama_batch_free).
#pragma once

#include <cstdint>

#include "llama.h"

namespace kvsteer::detail {

class Batch {
 public:
  explicit Batch(std::int32_t capacity);
  ~Batch();
  Batch(Batch&& other) noexcept;
  Batch& operator=(Batch&& other) noexcept;
  Batch(const Batch&) = delete;
  Batch& operator=(const Batch&) = delete;

  void clear() { batch_.n_tokens = 0; }
  // Appends one token of one sequence. Asserts capacity (callers chunk by capacity()).
  void add(llama_token token, llama_pos pos, llama_seq_id seq, bool logits);
  std::int32_t size() const { return batch_.n_tokens; }
  std::int32_t capacity() const { return capacity_; }
  const llama_batch& get() const { return batch_; }

 private:
  llama_batch batch_{};
  std::int32_t capacity_ = 0;
};

}  // namespace kvsteer::detail
