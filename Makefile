# Shoal — entry points. `make` builds everything; `make test` runs every test.
SHELL := /bin/bash
NPM_STAMP := node_modules/.package-lock.json
JOBS ?= $(shell nproc)
ADDON := native/build/Release/shoal.node
NATIVE_TEST_DIR := native/build-tests

.PHONY: all deps native ts native-tests test test-native test-ts bench demo fuzz clean

all: native ts

deps: $(NPM_STAMP)
$(NPM_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

# Node-API addon (cmake-js drives CMake; release build with all CPU kernels).
native: deps
	npx cmake-js compile --directory native --out native/build --parallel $(JOBS) --log-level warn

ts: deps
	npx tsc -p tsconfig.json

# Native tests and tools, built by plain CMake (no Node needed).
native-tests:
	cmake -S native -B $(NATIVE_TEST_DIR) -DCMAKE_BUILD_TYPE=Release -DSHOAL_TESTS=ON >/dev/null
	cmake --build $(NATIVE_TEST_DIR) --parallel $(JOBS)

test-native: native-tests
	cd $(NATIVE_TEST_DIR) && ctest --output-on-failure

test-ts: all
	npx tap --disable-coverage --jobs=2 'dist/test/**/*.test.js'

test: test-native fuzz test-ts

# The safetensors header parser under AddressSanitizer with >= 10,000 mutated inputs.
FUZZ_DIR := native/build-fuzz
fuzz:
	cmake -S native -B $(FUZZ_DIR) -DCMAKE_BUILD_TYPE=Debug -DSHOAL_SANITIZE=ON -DSHOAL_TESTS=OFF -DSHOAL_FUZZ=ON >/dev/null
	cmake --build $(FUZZ_DIR) --parallel $(JOBS) --target fuzz-safetensors
	$(FUZZ_DIR)/fuzz-safetensors --iterations 12000 --seed 1

bench: all
	node dist/cli/main.js bench --suite default

demo: all
	node dist/cli/main.js up

clean:
	rm -rf dist native/build native/build-tests native/build-fuzz

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
