# Two set-up commands for a fresh machine (see README.md):
#   make demo   creates .venv, installs keras-expander, prunes an LSTM on real sequential MNIST, exports it to
#               TFLite (float32 and int8), runs it under LiteRT and TFLite Micro, then builds it into firmware and
#               runs it on the host and on an emulated Cortex-M4 (installs the Arm toolchain and QEMU when root)
#   make test   creates .venv, installs the test extras, runs the tests (firmware tests need the toolchain; the
#               Keras 3 JAX / PyTorch backend tests run when `make install-backends` has installed them)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Offline data: the project's shared data folder when it is there; override with KERAS_EXPANDER_DATA=...
KERAS_EXPANDER_DATA ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data))
export KERAS_EXPANDER_DATA
# TFLite Micro source trees (host, cortex_m4, cortex_m4_cmsis_nn) for the firmware builds.
KERAS_EXPANDER_TFLM ?= $(abspath ../shared/tflm)
export KERAS_EXPANDER_TFLM
FIRMWARE_TOOLS := arm-none-eabi-g++ qemu-system-arm g++
FIRMWARE_PACKAGES := gcc-arm-none-eabi libnewlib-arm-none-eabi libstdc++-arm-none-eabi-newlib qemu-system-arm g++
DEMO_OUT ?= runs/demo
# The demo's recurrent cell: lstm, gru or simple_rnn (e.g. make demo DEMO_CELL=gru DEMO_OUT=runs/demo_gru).
DEMO_CELL ?= lstm
# pytest-xdist workers for make test (one per core; each test file runs in one worker, which keeps its models,
# converted once per file, and its firmware builds together). TEST_WORKERS=0 runs in this process.
TEST_WORKERS ?= auto

.PHONY: demo test test-slow test-backends install install-backends clean firmware-toolchain

$(BIN)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

install: $(BIN)/.installed

# The Keras 3 backends JAX and PyTorch (CPU wheels, about 0.9 GB); `make test` runs their tests when they are here.
$(BIN)/.backends: $(BIN)/.installed
	$(BIN)/pip install --quiet -e ".[test,jax,torch]"
	touch $@

install-backends: $(BIN)/.backends

# Installs the Arm toolchain and QEMU with apt when they are missing and we are root; otherwise says what to install.
firmware-toolchain:
	@missing=""; for tool in $(FIRMWARE_TOOLS); do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing the firmware toolchain ($$missing missing) ..."; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(FIRMWARE_PACKAGES) >/dev/null; \
	else echo "firmware toolchain missing ($$missing): as root, apt-get install $(FIRMWARE_PACKAGES)"; exit 1; fi

demo: install
	$(BIN)/python examples/sequential_mnist.py --cell $(DEMO_CELL) --out $(DEMO_OUT)
	$(BIN)/keras-expander export $(DEMO_OUT)/model.keras --mode float32 int8 --out $(DEMO_OUT)/export
	@if $(MAKE) --no-print-directory firmware-toolchain; then \
	  $(BIN)/keras-expander firmware $(DEMO_OUT)/export/int8.tflite --target host cortex-m4 \
	    --kernels reference cmsis_nn --test-samples 1000 --out $(DEMO_OUT)/firmware && \
	  $(BIN)/keras-expander firmware $(DEMO_OUT)/export/int8.tflite --target cortex-m4 --kernels cmsis_nn \
	    --compression ke_sparse --test-samples 1000 --out $(DEMO_OUT)/firmware_sparse; \
	else echo "stopped after the TFLite Micro (Python) run: the firmware step needs the toolchain above"; fi

test: install
	@$(BIN)/python -c "import jax, torch" 2>/dev/null || echo "JAX or PyTorch is not installed: the Keras 3 \
	backend tests (tests/test_backends.py) are skipped; make test-backends installs both and runs them"
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15

# Keras 3 on JAX and PyTorch: pruning, stop rules, save/load, strip, export and a Cortex-M4 run, per backend.
test-backends: install-backends
	$(BIN)/python -m pytest -q tests/test_backends.py --durations=10

test-slow: install
	$(BIN)/python -m pytest -q -m slow -n $(TEST_WORKERS) --dist loadfile

clean:
	rm -rf $(VENV) runs build *.egg-info
