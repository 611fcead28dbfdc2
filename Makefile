# Entry points. `make demo` runs the main job (the paper's study on SmolLM2-135M-Instruct, a bounded
# subset); `make test` builds everything and runs the tests. Both set up their dependencies first (once, cached).
SHELL := /bin/bash
PRESET ?= ci
BUILD := build/$(PRESET)
JOBS ?= $(shell nproc)
CACHE ?= $(HOME)/.cache/kvsteer

.PHONY: setup configure build test test-asan demo demo-organism study-real demo-mechanics format \
	format-check tidy bench fuzz clean

setup:
	@scripts/install_deps.sh all
	@scripts/setup_llama.sh >/dev/null
	@scripts/setup_models.sh "$$(scripts/setup_llama.sh 2>/dev/null)"
	@scripts/setup_python.sh >/dev/null

configure: setup
	@prefix=$$(scripts/setup_llama.sh 2>/dev/null); \
	 KVSTEER_LLAMA_PREFIX=$$prefix KVSTEER_LLAMA_SOURCE_DIR=$$prefix/../src \
	 KVSTEER_STORIES_GGUF=$$(scripts/setup_models.sh $$prefix stories) \
	 KVSTEER_SMOLLM2_GGUF=$$(scripts/setup_models.sh $$prefix smollm2) \
	 KVSTEER_PYTHON=$$(scripts/setup_python.sh) \
	 cmake --preset $(PRESET) >/dev/null

build: configure
	@cmake --build $(BUILD) -j $(JOBS)

test: build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS) -LE bench

test-asan:
	@$(MAKE) --no-print-directory test PRESET=asan

demo: build
	@scripts/study_real.sh $(BUILD) demo

demo-organism: build
	@organism/study.sh $(BUILD)

study-real: build
	@scripts/study_real.sh $(BUILD) full

demo-mechanics: build
	@scripts/demo.sh $(BUILD)

# libFuzzer targets (fuzz/README.md), FUZZ_SECONDS each (CI: 25; the long run: 600).
FUZZ_SECONDS ?= 25
fuzz:
	@$(MAKE) --no-print-directory build PRESET=fuzz
	@scripts/fuzz.sh build/fuzz $(FUZZ_SECONDS) $(FUZZ_TARGETS)

format:
	@git ls-files '*.cpp' '*.h' | xargs clang-format -i

format-check:
	@git ls-files '*.cpp' '*.h' | xargs clang-format --dry-run --Werror

tidy: build
	@scripts/tidy.sh $(BUILD)

bench: build
	@KVSTEER_BENCH_MODEL=$${KVSTEER_BENCH_MODEL:-$$(scripts/setup_models.sh $$(scripts/setup_llama.sh 2>/dev/null) stories)} \
	  $(BUILD)/bench/kvsteer-microbench

clean:
	rm -rf build
