# Shoal — entry points. `make` builds everything; `make test` runs every test.
SHELL := /bin/bash
NPM_STAMP := node_modules/.package-lock.json
JOBS ?= $(shell nproc)
ADDON := native/build/Release/shoal.node
NATIVE_TEST_DIR := native/build-tests

.PHONY: all deps native ts native-tests test test-native test-ts check-layout bench bench-peer bench-ab bench-moe demo fuzz clean trials

all: native ts web

deps: $(NPM_STAMP)
# `npm install`, not `npm ci`: the registry this runs against lacks rollup's optional
# binaries for other platforms, so no lockfile can list them all and `npm ci` refuses
# it; `npm install` keeps the locked versions and skips them.
$(NPM_STAMP): package.json package-lock.json $(wildcard packages/*/package.json)
	npm install --no-audit --no-fund
	@touch $@

# Node-API addon (cmake-js drives CMake; release build with all CPU kernels).
native: deps
	npx cmake-js compile --directory native --out native/build --parallel $(JOBS) --log-level warn

# TypeScript: npm workspaces under packages/, built in dependency order by project
# references (tsconfig.json); each package compiles src/ and test/ into its own dist/.
CLI_MAIN := packages/cli/dist/src/main.js
ts: deps
	npx tsc -b
	@scripts/prune-dist.sh
	@chmod +x $(CLI_MAIN)

# Native tests and tools, built by plain CMake (no Node needed).
native-tests:
	cmake -S native -B $(NATIVE_TEST_DIR) -DCMAKE_BUILD_TYPE=Release -DSHOAL_TESTS=ON >/dev/null
	cmake --build $(NATIVE_TEST_DIR) --parallel $(JOBS)

test-native: native-tests
	cd $(NATIVE_TEST_DIR) && ctest --output-on-failure

test-ts: all
	npx tap --disable-coverage --jobs=2 'packages/*/dist/test/**/*.test.js'

# Imports point one way, no cycles, no dead modules, no source over 800 lines (docs/architecture.md).
check-layout: deps
	scripts/check-layout.sh

# `make test` on a fresh Debian/Ubuntu machine: scripts/setup.sh installs the system
# packages (root or passwordless sudo) or says which suites skip without them; the
# suites that skip for a missing package are listed again at the end.
SKIP_LOG := $(CURDIR)/.test-skips
test:
	@scripts/setup.sh --for test
	@rm -f $(SKIP_LOG)
	@SHOAL_SKIP_LOG=$(SKIP_LOG) $(MAKE) --no-print-directory check-layout test-native fuzz test-ts; status=$$?; \
	  scripts/test-summary.sh $(SKIP_LOG); exit $$status

# The safetensors header parser under AddressSanitizer with >= 10,000 mutated inputs.
FUZZ_DIR := native/build-fuzz
fuzz:
	cmake -S native -B $(FUZZ_DIR) -DCMAKE_BUILD_TYPE=Debug -DSHOAL_SANITIZE=ON -DSHOAL_TESTS=OFF -DSHOAL_FUZZ=ON >/dev/null
	cmake --build $(FUZZ_DIR) --parallel $(JOBS) --target fuzz-safetensors
	$(FUZZ_DIR)/fuzz-safetensors --iterations 12000 --seed 1

# Benchmarks: kernels (memory bandwidth, INT4 matvec, prefill GEMM), the engine
# end to end on a TinyLlama-1.1B-shaped AWQ w4g128 model, and fleet ingest with
# 1,000 simulated devices. Tables on stdout, JSON under .bench/.
BENCH_DIR := .bench
BENCH_MODEL := $(BENCH_DIR)/tinyllama-1.1b-awq-w4g128
bench: all native-tests
	@mkdir -p $(BENCH_DIR)
	native/build-tests/bench-kernels
	native/build-tests/bench-kernels --json > $(BENCH_DIR)/kernels.json
	@[ -f $(BENCH_MODEL)/config.json ] || node $(CLI_MAIN) gen-model --shape tinyllama-1.1b --quant awq-w4g128 --out $(BENCH_MODEL)
	node $(CLI_MAIN) bench --model $(BENCH_MODEL)
	node $(CLI_MAIN) bench --model $(BENCH_MODEL) --json > $(BENCH_DIR)/tinyllama-awq-w4g128.json
	node packages/devkit/dist/src/bench/fleet-bench.js --devices 1000 --duration 60 --out $(BENCH_DIR)/fleet.json

# MoE decode on a Mixtral-8x7B-shaped AutoAWQ w4g128 model cut to 2 of 32 layers (generated once
# into .bench, 1.9 GiB): weight bytes read per token against active and total, and the read
# bandwidth measured in the same run, with the experts in memory and mapped from the expert
# cache (docs/architectures.md).
bench-moe: native-tests
	@mkdir -p $(BENCH_DIR)
	native/build-tests/bench-moe --layers 2 --tokens 16 --rounds 3
	native/build-tests/bench-moe --layers 2 --tokens 16 --rounds 3 --json > $(BENCH_DIR)/mixtral-shape-moe.json
	@# the experts mapped from the repack cache (built by the first of these two runs): resident
	@# memory grows with the experts routed, not with all of them
	@rm -f $(BENCH_DIR)/mixtral-shape.experts
	native/build-tests/bench-moe --layers 2 --tokens 16 --rounds 3 --expert-cache $(BENCH_DIR)/mixtral-shape.experts
	native/build-tests/bench-moe --layers 2 --tokens 16 --rounds 3 --expert-cache $(BENCH_DIR)/mixtral-shape.experts --json > $(BENCH_DIR)/mixtral-shape-moe-cached.json

# Shoal against llama.cpp on this machine (docs/benchmarks.md): llama.cpp's prebuilt CPU
# libraries (npm @node-llama-cpp/linux-x64, pinned in scripts/bench-peer.mjs) are installed
# under .bench/peer for this benchmark only; a random Q4_0 GGUF of the same shape is written
# by native/tools/make-gguf; the engines run alternately, 3 pairs at 1 and 2 threads, 512-token
# prompt then 128 decoded. Takes minutes and wants an idle machine: not part of `make test`.
# This engine against itself at another revision (REV=<commit>), same model, A B A B:
# the other revision's shoal-run is built in a worktree under .bench/ab-<rev>.
bench-ab: native-tests
	@[ -n "$(REV)" ] || { echo "usage: make bench-ab REV=<commit>"; exit 2; }
	@mkdir -p $(BENCH_DIR)
	@[ -f $(BENCH_MODEL)/config.json ] || node $(CLI_MAIN) gen-model --shape tinyllama-1.1b --quant awq-w4g128 --out $(BENCH_MODEL)
	@[ -d $(BENCH_DIR)/ab-$(REV) ] || git worktree add --detach $(BENCH_DIR)/ab-$(REV) $(REV)
	cmake -S $(BENCH_DIR)/ab-$(REV)/native -B $(BENCH_DIR)/ab-$(REV)/native/build-tests -DCMAKE_BUILD_TYPE=Release -DSHOAL_TESTS=ON >/dev/null
	cmake --build $(BENCH_DIR)/ab-$(REV)/native/build-tests --target shoal-run --parallel $(JOBS)
	node scripts/bench-ab.mjs --a $(BENCH_DIR)/ab-$(REV)/native/build-tests/shoal-run --b native/build-tests/shoal-run \
	  --model $(BENCH_MODEL) --label-a $(REV) --label-b HEAD --out $(BENCH_DIR)/ab-$(REV).json

# PEER_SHAPE=llama-2-7b for the 7B shape (a 3.9 GB checkpoint and a 3.8 GB GGUF under .bench).
PEER_SHAPE ?= tinyllama-1.1b
PEER_MODEL := $(BENCH_DIR)/$(PEER_SHAPE)-awq-w4g128
PEER_JSON := $(BENCH_DIR)/$(if $(filter tinyllama-1.1b,$(PEER_SHAPE)),peer.json,peer-$(PEER_SHAPE).json)
bench-peer: all native-tests
	@mkdir -p $(BENCH_DIR)
	@[ -f $(PEER_MODEL)/config.json ] || node $(CLI_MAIN) gen-model --shape $(PEER_SHAPE) --quant awq-w4g128 --out $(PEER_MODEL)
	node scripts/bench-peer.mjs --shoal-model $(PEER_MODEL) --shape $(PEER_SHAPE) --out $(PEER_JSON)

# `make demo`: the build tools if missing (scripts/setup.sh), the build, then `shoal up`:
# stories260K quantized to INT4 with AWQ, rolled out to three local devices, a story from each.
demo:
	@scripts/setup.sh --for demo
	@$(MAKE) --no-print-directory all
	node $(CLI_MAIN) up

# Long fault-injection and memory trials (docs/reliability.md): controller and broker killed -9
# while devices deploy, two controller replicas, 1,000 requests + 100 deployments on one daemon.
trials: all
	node scripts/trials.mjs

clean:
	rm -rf packages/*/dist native/build native/build-tests native/build-fuzz

# ---- aarch64 (Jetson Orin) and deployment checks -------------------------------------
# Cross-compiles native/ with g++-aarch64-linux-gnu (native/cmake/aarch64-linux-gnu.cmake)
# and runs the native tests under qemu-aarch64: NEON and NEON-dotprod kernels against the
# scalar reference, stories260K greedy output against the reference. Installs nothing.
.PHONY: test-arm check-deploy
test-arm:
	JOBS=$(JOBS) scripts/test-arm.sh

# systemd-analyze verify on deploy/systemd units, shellcheck on deploy/install and scripts,
# and the installer's --dry-run for JetPack 5 and 6.
check-deploy:
	scripts/check-deploy.sh

# ---- fleet dashboard -------------------------------------------------------------------
# packages/controller/web (plain TypeScript + uPlot, built by Vite) into packages/controller/dist/web; the controller
# serves it at / (docs/dashboard.md). Type-checked with its own tsconfig (DOM libs).
.PHONY: web
web: deps
	npx tsc -p packages/controller/web/tsconfig.json
	npx vite build --config packages/controller/web/vite.config.ts

# ---- CUDA backend -------------------------------------------------------------------------
# Builds the native tests and tools with -DSHOAL_CUDA=ON (fat binary sm_80/86/87/89/90 + PTX)
# to prove the CUDA backend compiles and links; needs nvcc, not a GPU. test-cuda runs the CUDA
# op tests and the stories260K check on CUDA (they print SKIP and pass when no GPU is usable).
.PHONY: cuda-build test-cuda
CUDA_BUILD_DIR := native/build-cuda
NVCC ?= $(shell command -v nvcc 2>/dev/null || echo /usr/local/cuda/bin/nvcc)
cuda-build:
	cmake -S native -B $(CUDA_BUILD_DIR) -DCMAKE_BUILD_TYPE=Release -DSHOAL_TESTS=ON -DSHOAL_CUDA=ON -DCMAKE_CUDA_COMPILER=$(NVCC) >/dev/null
	cmake --build $(CUDA_BUILD_DIR) --parallel $(JOBS)

test-cuda: cuda-build
	$(CUDA_BUILD_DIR)/test-backend-ops-cuda
