// A program outside the kvsteer tree, built against the installed package: loads a GGUF, decodes
// a prompt and checks the logits. Exits 0 when they are finite and as many as the vocabulary
// (and as argv[2], when given), 1 otherwise.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <iostream>
#include <string>

#include "kvsteer/kvsteer.h"

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3) {
    std::cerr << "usage: " << argv[0] << " MODEL.gguf [N_VOCAB]\n";
    return 2;
  }
  try {
    kvsteer::Backend backend(kvsteer::LogLevel::Error);
    const auto model = kvsteer::load_model(argv[1]);
    kvsteer::SessionParams params;
    params.n_ctx = 128;
    params.n_batch = 128;
    params.n_threads = 1;
    kvsteer::Session session(model, params);
    const auto tokens = model->tokenize_prompt("Once upon a time");
    session.decode(0, tokens);
    const auto logits = session.logits(0);

    const std::int32_t n_vocab = model->n_vocab();
    if (argc == 3 && n_vocab != std::stoi(argv[2])) {
      std::cerr << "n_vocab is " << n_vocab << ", expected " << argv[2] << "\n";
      return 1;
    }
    if (logits.size() != static_cast<std::size_t>(n_vocab)) {
      std::cerr << logits.size() << " logits, expected n_vocab = " << n_vocab << "\n";
      return 1;
    }
    for (std::size_t i = 0; i < logits.size(); ++i) {
      if (!std::isfinite(logits[i])) {
        std::cerr << "logit " << i << " is " << logits[i] << "\n";
        return 1;
      }
    }
    std::cout << "ok: " << tokens.size() << " tokens decoded, " << logits.size()
              << " finite logits\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "consumer: error: " << e.what() << "\n";
    return 1;
  }
}
