# asr_kd: the two set-up commands README promises, plus helpers.
#   make demo   - install, prepare the tiny synthetic corpus, train a small Conformer-CTC, decode, print WER
#   make test   - install, then run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: install demo test bench clean-build

install:
	bash scripts/install.sh

demo: install
	bash egs/synth/ASR/demo.sh

test: install
	bash scripts/run_tests.sh $(PYTEST_ARGS)

bench: install
	$(PY) benchmarks/bench_frame_kd.py

clean-build:
	rm -rf build asr_kd/_C*.so
