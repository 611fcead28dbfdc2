// UNSTABLE: raw libllama handles behind kvsteer objects, for tools that need libllama calls
// kvsteer does not wrap. The handles stay owned by kvsteer; do not free them. This header may
// change in any release (docs/api-stability.md).
#pragma once

struct llama_model;
struct llama_context;

namespace kvsteer {
class Model;
class Session;

const llama_model* raw_model(const Model& model);
llama_context* raw_context(Session& session);
}  // namespace kvsteer
