# asr_kd: the two set-up commands README promises, plus helpers.
#   make demo   - install, then egs/synth/ASR/demo.sh: the pretrained teacher vs a student alone vs the student
#                 with KD from the teacher (small synthetic corpus, ~15 min on 2 cores; DEMO_MINUTES scales it)
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
