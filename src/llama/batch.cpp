#include "llama/batch.h"

#include <utility>

#include "base/assert.h"

namespace kvsteer::detail {

Batch::Batch(std::int32_t capacity)
    : batch_(llama_batch_init(capacity, 0, 1)), capacity_(capacity) {}

Batch::~Batch() {
  if (capacity_ > 0) {
    llama_batch_free(batch_);
  }
}

Batch::Batch(Batch&& other) noexcept
    : batch_(std::exchange(other.batch_, llama_batch{})),
      capacity_(std::exchange(other.capacity_, 0)) {}

Batch& Batch::operator=(Batch&& other) noexcept {
  if (this != &other) {
    if (capacity_ > 0) {
      llama_batch_free(batch_);
    }
    batch_ = std::exchange(other.batch_, llama_batch{});
    capacity_ = std::exchange(other.capacity_, 0);
  }
  return *this;
}

void Batch::add(llama_token token, llama_pos pos, llama_seq_id seq, bool logits) {
  KVSTEER_ASSERT(batch_.n_tokens < capacity_);
  const std::int32_t i = batch_.n_tokens++;
  batch_.token[i] = token;
  batch_.pos[i] = pos;
  batch_.n_seq_id[i] = 1;
  batch_.seq_id[i][0] = seq;
  batch_.logits[i] = logits ? 1 : 0;
}

}  // namespace kvsteer::detail
