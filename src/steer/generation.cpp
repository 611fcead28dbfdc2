// Generation with one-time cache steering (paper §1.4, method.md §6.1): prefill, edit the last
// prefilled cell once, decode the tail token (offset or last prompt token), then sample.
#include "kvsteer/generation.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <optional>
#include <span>
#include <string>

#include "kvsteer/error.h"
#include "llama/sampler.h"
#include "steer/protocol.h"
#include "steer/stop_strings.h"

namespace kvsteer {

const char* stop_reason_name(StopReason reason) noexcept {
  switch (reason) {
    case StopReason::Eog:
      return "eog";
    case StopReason::StopString:
      return "stop_string";
    case StopReason::Length:
      return "length";
  }
  return "?";
}

namespace {

// Orders token sequences lexicographically (the map key of shared prefills).
struct TokenSpanLess {
  bool operator()(std::span<const Token> a, std::span<const Token> b) const {
    return std::lexicographical_compare(a.begin(), a.end(), b.begin(), b.end());
  }
};

struct Running {
  const GenerationRequest* request = nullptr;
  std::vector<Token> prefill;  // tokens prefilled before the edit
  Token tail = 0;              // token decoded after the edit
  detail::Sampler sampler;
  Generation result;
  bool done = false;
  Token next = 0;
};

void validate(const Session& session, std::span<const GenerationRequest> requests,
              const GenerationParams& params) {
  if (params.n_predict < 1) {
    throw Error(ErrorCode::InvalidArgument,
                "n-predict must be >= 1, got " + std::to_string(params.n_predict));
  }
  detail::check_stop_strings(params.stop_strings);
  std::size_t cells = 0;
  for (std::size_t i = 0; i < requests.size(); ++i) {
    const auto& r = requests[i];
    (void)detail::split_prompt(r.prompt, r.steering_params.offset_token, r.steering != nullptr);
    const bool has_offset = r.steering_params.offset_token.has_value();
    if (has_offset) {
      session.model().check_token(*r.steering_params.offset_token);
    }
    const std::size_t total =
        r.prompt.size() + (has_offset ? 1 : 0) + static_cast<std::size_t>(params.n_predict);
    if (total > session.n_ctx_seq()) {
      throw Error(ErrorCode::InvalidArgument,
                  "prompt (" + std::to_string(r.prompt.size()) + " tokens) plus n-predict (" +
                      std::to_string(params.n_predict) + ") exceeds the context (" +
                      std::to_string(session.n_ctx_seq()) + " per sequence); raise --ctx-size");
    }
    cells += total;
    if (r.steering != nullptr) {
      check_applicable(*r.steering, session);
    }
    for (std::size_t j = 0; j < i; ++j) {
      if (requests[j].seq == r.seq) {
        throw Error(ErrorCode::InvalidArgument,
                    "two generation requests use sequence " + std::to_string(r.seq));
      }
    }
  }
  if (cells > session.n_ctx()) {
    throw Error(ErrorCode::InvalidArgument,
                std::to_string(requests.size()) + " sequences need up to " + std::to_string(cells) +
                    " cache cells, more than the context (" + std::to_string(session.n_ctx()) +
                    "); raise --ctx-size or generate fewer at once");
  }
}

}  // namespace

std::vector<Generation> generate(Session& session, std::span<const GenerationRequest> requests,
                                 const GenerationParams& params) {
  const auto start = std::chrono::steady_clock::now();
  validate(session, requests, params);
  // The deltas first: a vector with a non-finite value or a coefficient that overflows is refused
  // before any sequence is cleared or decoded.
  std::vector<CellDelta> deltas(requests.size());
  for (std::size_t i = 0; i < requests.size(); ++i) {
    if (requests[i].steering != nullptr) {
      deltas[i] = steering_delta(*requests[i].steering, requests[i].steering_params);
    }
  }
  const Model& model = session.model();
  std::vector<Running> runs;
  runs.reserve(requests.size());
  for (const auto& r : requests) {
    Running run{&r, {}, 0, detail::Sampler(params.sampling), {}, false, 0};
    const auto& offset = r.steering_params.offset_token;
    const detail::ProtocolSplit split =
        detail::split_prompt(r.prompt, offset, r.steering != nullptr);
    run.prefill.assign(split.prefill.begin(), split.prefill.end());
    run.tail = split.tail;
    if (offset) {
      run.result.text = model.token_to_piece(*offset);
    }
    run.result.n_prompt = static_cast<std::int32_t>(r.prompt.size());
    session.clear_sequence(r.seq);
    runs.push_back(std::move(run));
  }

  // Requests with the same prefill (a sweep: one question, many steering settings) share one
  // prefill: the first is decoded, the others get copies of its cells (no recompute).
  std::vector<DecodeItem> items;
  std::vector<std::pair<SeqId, SeqId>> copies;                              // (source, destination)
  std::map<std::span<const Token>, std::size_t, TokenSpanLess> first_with;  // prefill -> run
  for (std::size_t i = 0; i < runs.size(); ++i) {
    if (runs[i].prefill.empty()) {
      continue;
    }
    const std::size_t first = first_with.try_emplace(runs[i].prefill, i).first->second;
    if (first == i) {
      items.push_back({runs[i].request->seq, runs[i].prefill, false});
    } else {
      copies.emplace_back(runs[first].request->seq, runs[i].request->seq);
    }
  }
  if (!items.empty()) {
    session.decode(items);
  }
  for (const auto& [src, dst] : copies) {
    session.copy_sequence(src, dst);
  }
  for (std::size_t i = 0; i < runs.size(); ++i) {
    if (runs[i].request->steering == nullptr) {
      continue;
    }
    session.add_to_cell(runs[i].request->seq, static_cast<Pos>(runs[i].prefill.size()) - 1,
                        deltas[i]);
  }
  if (params.before_tail) {
    params.before_tail(session);
  }
  items.clear();
  for (const auto& run : runs) {
    items.push_back({run.request->seq, {&run.tail, 1}, true});
  }
  session.decode(items);
  const double ttft_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  for (auto& run : runs) {
    run.result.ttft_ms = ttft_ms;
  }

  const detail::StopRules rules{params.n_predict, &params.stop_strings, params.stop_at_eog};
  for (std::int32_t step = 0; step < params.n_predict; ++step) {
    items.clear();
    for (auto& run : runs) {
      if (run.done) {
        continue;
      }
      const Token token = run.sampler.sample(session.logits(run.request->seq));
      const detail::AcceptedToken accepted =
          detail::accept_token(model, token, run.result.text,
                               static_cast<std::int32_t>(run.result.tokens.size()), rules);
      if (accepted.counted) {
        run.result.tokens.push_back(token);
      }
      if (accepted.stop) {
        run.done = true;
        run.result.stop_reason = *accepted.stop;
        continue;
      }
      run.next = token;
      items.push_back({run.request->seq, {&run.next, 1}, true});
    }
    if (items.empty()) {
      break;
    }
    session.decode(items);
  }
  std::vector<Generation> out;
  out.reserve(runs.size());
  for (auto& run : runs) {
    out.push_back(std::move(run.result));
  }
  return out;
}

Generation generate(Session& session, const GenerationRequest& request,
                    const GenerationParams& params) {
  return std::move(generate(session, std::span<const GenerationRequest>(&request, 1), params)[0]);
}

}  // namespace kvsteer
