# Two set-up commands for a fresh machine (see README.md):
#   make demo   creates .venv, installs keras-expander, prunes an LSTM on real sequential MNIST, exports it to
#               TFLite (float32 and int8) and runs it under LiteRT and TFLite Micro
#   make test   creates .venv, installs the test extras, runs the tests
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Offline data: the project's shared data folder when it is there; override with KERAS_EXPANDER_DATA=...
KERAS_EXPANDER_DATA ?= $(abspath ../shared/data)
export KERAS_EXPANDER_DATA
export TF_CPP_MIN_LOG_LEVEL ?= 2
DEMO_OUT ?= runs/demo

.PHONY: demo test test-slow install clean

$(BIN)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/python examples/sequential_mnist.py --out $(DEMO_OUT)
	$(BIN)/keras-expander export $(DEMO_OUT)/model.keras --mode float32 int8 --out $(DEMO_OUT)/export

test: install
	$(BIN)/python -m pytest -q

test-slow: install
	$(BIN)/python -m pytest -q -m slow

clean:
	rm -rf $(VENV) runs build *.egg-info
