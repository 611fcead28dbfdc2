// --verify: load a written fixture with libllama and check that it works end to end.
#pragma once

#include <string>

#include "recipes.h"

namespace kvsteer::tinymodel {

// Loads `path` and checks, for flash attention enabled and disabled (context: n_seq_max 2,
// kv_unified, F16 K/V cache):
//  - the chat template renders a user turn, and its control tokens (or ChatML's <|im_start|> /
//    <|im_end|> in "<|im_start|>user\nhello<|im_end|>") tokenize to single control tokens;
//  - decoding the prompt and 4 greedy tokens gives finite logits that are not all equal;
//  - the sequence-state blob of seq 0 parses completely (llama-internals.md §1.2) and has one
//    block per KV cache (two for iSWA models), recipe.n_layer layers in all, F16 K rows of
//    n_head_kv * head_dim, v_trans == !flash_attn, and a smaller SWA block than base block.
// Decodes with one thread: results do not depend on the thread count, and ggml's spinning
// worker threads make tiny graphs ~100x slower on a loaded 2-core machine.
// Prints one summary line to stdout. Throws Error(Format) naming the failed check, or
// Error(Backend) when libllama fails to load or decode.
void verify_model(const std::string& path, const Recipe& recipe);

}  // namespace kvsteer::tinymodel
