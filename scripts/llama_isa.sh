# Sourced by setup_llama.sh and setup_llama_server.sh: which instruction sets llama.cpp is built
# for. The default on x86-64 is a fixed set, x86-64-v3 (AVX, AVX2, FMA, F16C, BMI2), not the
# build machine's own (-march=native): ggml's SIMD width decides the order in which its dot
# products add up, and SmolLM2-135M's greedy answers part wherever two tokens are nearly tied, so
# an AVX-512 build and an AVX2 build give other answers to the same prompts (docs/real-model.md,
# "Machines fall into kinds"). With a fixed set every machine computes the same sums, and a study
# resumed on another machine goes on with the answers it began with. The cost, measured on an
# AMD EPYC (Zen 4) in five interleaved rounds against the native (AVX-512) build: prefill at
# 1 000 tokens 307-353 against 288-324 tok/s, one sequence 114-150 against 111-145 tok/s, 16
# sequences 152-186 against 150-194 tok/s: none beyond the machine's noise, at most a few per
# cent for 16 sequences.
#   KVSTEER_LLAMA_NATIVE=1  build for this machine (-march=native) instead: fastest here, other
#                           answers than machines of other instruction sets
if [[ "${KVSTEER_LLAMA_NATIVE:-0}" == "1" || "$(uname -m)" != "x86_64" ]]; then
  llama_isa="native"
  llama_isa_flags=(-DGGML_NATIVE=ON)
else
  llama_isa="x86-64-v3"
  llama_isa_flags=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
                   -DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AVX_VNNI=OFF)
fi
