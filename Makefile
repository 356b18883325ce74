# The two commands of the course (see README):
#   make lab    set everything up, then open JupyterLab on the course
#   make test   set everything up, then run the whole test suite (unit tests + every notebook)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.course-setup-done

.PHONY: setup lab test unit check lint gpu-check notebooks adapters images exercises train-lora train-lora-ddp clean-venv canary

setup: $(STAMP)

# scripts/install_course.py: pip, torch (CPU build, only where no torch is importable), requirements.txt, the
# offline model, lora_helpers. Every version it installs is written in requirements.txt.
$(STAMP): requirements.txt pyproject.toml scripts/install_course.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python scripts/install_course.py
	touch $(STAMP)

# JupyterLab on the course map (README.md); adds --allow-root when run as root. Extra flags: ARGS="--no-browser --port 8890".
lab: setup
	$(BIN)/python scripts/lab.py $(ARGS)

# The suite runs TEST_JOBS test files/notebooks at a time (pytest-xdist, one notebook stays on one worker), each with
# TEST_THREADS torch threads: on 2 cores, two single-threaded notebooks beat one notebook on two threads (small matmuls
# parallelise poorly, and two processes with 2 OpenMP threads each on 2 cores stall each other). TEST_JOBS=0: serial.
TEST_JOBS    ?= 2
TEST_THREADS ?= 1

test: setup
	$(BIN)/ruff check
	OMP_NUM_THREADS=$(TEST_THREADS) HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -n $(TEST_JOBS) --dist loadscope

unit: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest tests

# The maintainer's fast loop (CONTRIBUTING.md): ruff, then every unit test that neither loads the course model nor
# runs a notebook (pytest markers `slow` and `notebook`). `make test` is the whole suite, what CI runs.
check: setup
	$(BIN)/ruff check
	OMP_NUM_THREADS=$(TEST_THREADS) HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -n $(TEST_JOBS) --dist loadscope -m "not slow and not notebook" tests

lint: setup
	$(BIN)/ruff check

# Maintenance. The notebooks are the source: edit a lesson or a solution in JupyterLab, then `make notebooks`
# re-executes it in a fresh kernel, offline, in place (outputs are committed), regenerates exercises/ from solutions/
# and executes them (unanswered, fast), and redraws images/. One notebook: `make notebooks NB=notebooks/lora_finetuning.ipynb`.
# Like the tests, TEST_JOBS notebooks at a time with TEST_THREADS torch threads each (scripts/execute_notebooks.py).
NB      ?= notebooks/lora_finetuning.ipynb $(filter-out notebooks/lora_finetuning.ipynb,$(wildcard notebooks/*.ipynb)) solutions/*.ipynb
EXECUTE := $(BIN)/python scripts/execute_notebooks.py --jobs $(TEST_JOBS) --threads $(TEST_THREADS)

notebooks: setup
	$(BIN)/python scripts/setup_cell.py
	$(EXECUTE) $(NB)
	$(BIN)/python scripts/make_exercises.py
	$(EXECUTE) exercises/*.ipynb
	$(BIN)/python scripts/lesson_times.py --write
	$(MAKE) images

# exercises/ from solutions/ (never edit exercises/ by hand), then execute the exercise notebooks that changed.
exercises: setup
	$(BIN)/python scripts/make_exercises.py | tee $(VENV)/exercises.log
	$(EXECUTE) $$(sed -n 's/^written (execute it next): //p' $(VENV)/exercises.log) </dev/null

# Figures in images/, drawn from code and from the measurements the lessons write to outputs/ (copied to images/data/).
images: setup
	HF_HUB_OFFLINE=1 $(BIN)/python scripts/make_figures.py

adapters: setup
	HF_HUB_OFFLINE=1 $(BIN)/python scripts/build_adapters.py

TASK  ?= ngay_thang
NPROC ?= 2

# Train a LoRA adapter from the command line (docs/multi_gpu.md); extra flags via ARGS="--max-steps 60 --overwrite".
train-lora: setup
	HF_HUB_OFFLINE=1 $(BIN)/python scripts/train_lora.py --task $(TASK) --output-dir outputs/lora_$(TASK) $(ARGS)

train-lora-ddp: setup
	HF_HUB_OFFLINE=1 $(BIN)/accelerate launch --config_file scripts/accelerate_configs/ddp.yaml --num_processes $(NPROC) \
	  scripts/train_lora.py --task $(TASK) --output-dir outputs/lora_$(TASK)_ddp $(ARGS)

clean-venv:
	rm -rf $(VENV)

# API-drift canary (not part of `make test`): a separate venv with the course set-up, then the NEWEST transformers,
# peft and trl (whatever else they pull), running the unit tests and lesson 1; maintainers learn about API drift
# before learners do. Nothing of the course venv is touched; remove it with `rm -rf $(CANARY)`.
CANARY ?= $(VENV)/canary
canary:
	rm -rf $(CANARY)
	$(PYTHON) -m venv $(CANARY)
	$(CANARY)/bin/python scripts/install_course.py
	$(CANARY)/bin/python -m pip install -q --upgrade transformers peft trl
	$(CANARY)/bin/python -m pip list 2>/dev/null | grep -iE '^(torch|transformers|peft|trl|accelerate|datasets) '
	HF_HUB_OFFLINE=1 $(CANARY)/bin/python -m pytest tests --ignore=tests/test_colab_rehearsal.py
	HF_HUB_OFFLINE=1 $(CANARY)/bin/python -m pytest notebooks/load_lora_adapter_example.ipynb

# GPU rehearsal: on a CUDA machine, every lesson and solutions notebook run on a copy (committed CPU outputs untouched),
# offline, 4 at a time; the report (pass/fail, minutes, peak GPU memory, precision) goes to docs/gpu_check.md.
gpu-check: setup
	HF_HUB_OFFLINE=1 $(BIN)/python scripts/gpu_check.py $(ARGS)
