# Segmenter reproduction harness. `make smoke` and `make test` are all a newcomer needs.
# `make test-fast`: the tests that run no training job, SLURM or browser (under 2 minutes).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
VENV_PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
# The Python that runs everything: the project's .venv (built on first use), or an existing
# environment used as it is, never installed into: PY=/path/to/bin/python, or USE_ENV=1 for
# the active conda or virtual environment (CONDA_PREFIX, VIRTUAL_ENV)
ifdef USE_ENV
ACTIVE_ENV := $(or $(VIRTUAL_ENV),$(CONDA_PREFIX))
ifeq ($(ACTIVE_ENV),)
$(error USE_ENV=1: no conda or virtual environment is active (activate one, or give PY=/path/to/python))
endif
PY := $(ACTIVE_ENV)/bin/python
endif
PY ?= $(VENV_PY)
# what an existing environment must hold (environment.yml installs all of them)
RUN_MODULES := torch mmengine mmcv mmcv.ops mmseg wandb pandas matplotlib rich filelock yaml \
	ftfy regex
TEST_MODULES := pytest xdist selenium submitit cityscapesscripts
has_modules = $(PY) -c "import importlib.util as u, sys; m = [n for n in sys.argv[1:] \
	if u.find_spec(n.split('.')[0]) is None or u.find_spec(n) is None]; m and sys.exit('error: ' + sys.executable + ' lacks ' + \
	', '.join(m) + ' (environment.yml installs them; or leave PY unset to use .venv)')" $(1)
# pip resolves torch's requirements again at each step and would lift setuptools past 82,
# which lacks pkg_resources (mmcv's setup.py and mmengine's `mmseg::` lookup need it)
SETUPTOOLS := 'setuptools>=77.0.3,<82'

export WANDB_MODE ?= offline
ADE20K_ROOT ?= data/ade/ADEChallengeData2016
PASCAL_CONTEXT_ROOT ?= data/VOCdevkit/VOC2010
CITYSCAPES_ROOT ?= data/cityscapes
# each table's dataset (experiments/datasets.yaml) and its folder
DATASET_table3 := ade20k
DATASET_table6 := ade20k
DATASET_pascal_context := pascal_context
DATASET_cityscapes := cityscapes
ROOT_ade20k = $(ADE20K_ROOT)
ROOT_pascal_context = $(PASCAL_CONTEXT_ROOT)
ROOT_cityscapes = $(CITYSCAPES_ROOT)
data_root = $(ROOT_$(DATASET_$(1)))
SEEDS ?= 1
ROWS ?=
ROWS_ARG := $(if $(ROWS),--rows $(ROWS),)
# how each row x seed runs: LAUNCHER=local (one process), torchrun (GPUS processes on this
# machine) or slurm (one job array, a task each: GPUS per node, NODES nodes, PARTITION, TIME
# limit, ACCOUNT, QOS, CONSTRAINT, MEM per node, EXCLUSIVE=1 for whole nodes; NO_WAIT=1 submits
# and returns, POLL= seconds between two squeue calls while waiting)
LAUNCHER ?= local
GPUS ?= 1
NODES ?= 1
PARTITION ?=
TIME ?=
ACCOUNT ?=
QOS ?=
CONSTRAINT ?=
MEM ?=
EXCLUSIVE ?=
NO_WAIT ?=
POLL ?=
# AMP=bf16|fp16|tf32: reduced-precision training (faster, not the paper's fp32; the report
# says so); tf32 and fp16 need a GPU
AMP ?=
# MAX_ITERS=N: a shortened schedule for cheap trials (the report gives such rows no verdict)
MAX_ITERS ?=
TRAIN_ARGS = $(if $(AMP),--amp $(AMP),) $(if $(MAX_ITERS),--max-iters $(MAX_ITERS),)
LAUNCH_ARGS = --launcher $(LAUNCHER) --gpus $(GPUS) --nodes $(NODES) \
	$(if $(PARTITION),--partition $(PARTITION),) $(if $(TIME),--time $(TIME),) \
	$(if $(ACCOUNT),--account $(ACCOUNT),) $(if $(QOS),--qos $(QOS),) \
	$(if $(CONSTRAINT),--constraint '$(CONSTRAINT)',) $(if $(MEM),--mem $(MEM),) \
	$(if $(EXCLUSIVE),--exclusive,) $(if $(NO_WAIT),--no-wait,) \
	$(if $(POLL),--poll-interval $(POLL),)
CHECKPOINTS ?= checkpoints/official
TABLE ?= table3
TABLES ?= table3 table6 pascal_context cityscapes
TABLES_ARG := $(foreach t,$(TABLES),--table $(t))

.PHONY: install browser slurm smoke test test-fast bench data data-pascal_context \
	data-cityscapes weights plan plan-table3 plan-table6 plan-pascal_context plan-cityscapes \
	reproduce-table3 reproduce-table6 reproduce-pascal_context reproduce-cityscapes \
	evaluate-table3 evaluate-table6 evaluate-pascal_context evaluate-cityscapes rehearse \
	report clean sync-help gpu-check-dry-run

ifeq ($(PY),$(VENV_PY))
install: $(STAMP)
else
install:
	@$(call has_modules,$(RUN_MODULES))
endif

# mmcv compiles its CUDA kernels whenever torch sees a GPU (or FORCE_CUDA=1): far longer than
# the CPU build, never built here against torch 2.13, and no row uses them (mmseg only imports
# the ops module). So the build sees no GPU, whatever the machine has; MMCV_CUDA_OPS=1 asks for
# the kernels (untested with this torch) and skips pip's wheel cache, which may hold a CPU build.
MMCV_CUDA_OPS ?=
MMCV_BUILD = MMCV_WITH_OPS=1 \
	$(if $(filter 1,$(MMCV_CUDA_OPS)),FORCE_CUDA=1,CUDA_VISIBLE_DEVICES= FORCE_CUDA=0)
MMCV_PIP_ARGS = $(if $(filter 1,$(MMCV_CUDA_OPS)),--no-cache-dir,)
$(STAMP): requirements.txt requirements-post.txt requirements-no-deps.txt
	@test -x $(VENV_PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -r requirements.txt
	@# mmcv 2.1.0 has no wheel: build it against the installed torch. No build isolation, or
	@# its compiled ops can be silently skipped; pip's wheel cache keeps the result.
	$(MMCV_BUILD) MAX_JOBS=$${MAX_JOBS:-2} $(PIP) install --no-build-isolation $(MMCV_PIP_ARGS) \
		$(SETUPTOOLS) mmcv==2.1.0
	$(PIP) install -r requirements-post.txt
	$(PIP) install --no-deps -r requirements-no-deps.txt
	$(VENV_PY) -c "import mmcv.ops, mmseg, wandb; print('mmcv', mmcv.__version__, 'mmseg', mmseg.__version__)"
	@touch $@

smoke: install
	$(PY) -m harness run $(TABLES_ARG) --profile smoke --seeds $(SEEDS) $(ROWS_ARG) \
		$(TRAIN_ARGS)
	@$(MAKE) --no-print-directory sync-help PROFILE=smoke

# Debian's Chromium and its driver, for the test that reads the HTML report like a person
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_BROWSER := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		$(APT_BROWSER) || ($(SUDO) apt-get update -q && $(APT_BROWSER))

# Debian's SLURM and munge, for the test that runs a job on a real one-node cluster
APT_SLURM := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge
slurm:
	@command -v slurmctld >/dev/null && command -v slurmd >/dev/null && \
		command -v munged >/dev/null || $(APT_SLURM) || ($(SUDO) apt-get update -q && $(APT_SLURM))

# the suite runs in TEST_WORKERS processes, a test file each at a time (a file's tests share
# their module's trained jobs; tests/conftest.py makes a few once for all), in the order
# tests/conftest.py gives (the longest first); 3 workers on 2 cores: a worker waiting on a
# job, a poll or the SLURM daemons leaves its core to the others
TEST_WORKERS ?= 3
# test-fast's short tests wait on nothing: a worker a core
FAST_WORKERS ?= 2
test: install browser slurm
	@$(call has_modules,$(TEST_MODULES))
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder \
		--durations=15 tests

# the tests marked (pytest.ini) neither e2e, slurm nor browser: no training job, nothing more
# to install; handed out test by test, as they are short and many
test-fast: install
	@$(call has_modules,$(TEST_MODULES))
	$(PY) -m pytest -q -n $(FAST_WORKERS) --dist worksteal \
		-m "not e2e and not slurm and not browser" --durations=10 tests

# verify ADE20K at ADE20K_ROOT (ZIP=path/ADEChallengeData2016.zip unpacks it there first)
data: install
	$(PY) -m harness check-data --data-root $(ADE20K_ROOT) $(if $(ZIP),--zip $(ZIP),)

# verify Pascal Context (an already converted VOCdevkit/VOC2010) or Cityscapes (CONVERT=1 first
# makes the train-id labels with cityscapesscripts) at their roots
data-pascal_context: install
	$(PY) -m harness check-data --dataset pascal_context --data-root $(PASCAL_CONTEXT_ROOT)

data-cityscapes: install
	$(PY) -m harness check-data --dataset cityscapes --data-root $(CITYSCAPES_ROOT) \
		$(if $(CONVERT),--convert,)

# the pretrained weights of every row of TABLES (ROWS= to pick some): download, verify the
# SHA-256 when the spec has one, convert into weights/. FROM=file converts a local release
# instead; WEIGHTS_DIR= holds releases downloaded by hand (default weights/original)
weights: install
	$(PY) -m harness weights $(TABLES_ARG) $(ROWS_ARG) $(if $(FROM),--from $(FROM),)

# dry run of a table's full runs: per row x seed the config, batch, iterations, GPU-hours,
# disk, weights and data; launches nothing, writes nothing
PLAN_ARGS = --seeds $(SEEDS) --gpus $(GPUS) $(ROWS_ARG) $(if $(LAUNCHER),--launcher $(LAUNCHER),)
plan: install
	$(PY) -m harness plan --table $(TABLE) --data-root $(call data_root,$(TABLE)) $(PLAN_ARGS)

plan-table3 plan-table6 plan-pascal_context plan-cityscapes: plan-%: install
	$(PY) -m harness plan --table $* --data-root $(call data_root,$*) $(PLAN_ARGS)

# the paper's runs: the table's real dataset, pretrained weights, the authors' schedule and
# batch for that dataset (ADE20K: 160k iterations at 8; experiments/datasets.yaml)
reproduce = $(PY) -m harness check-data --layout-only --dataset $(DATASET_$(1)) \
	--data-root $(call data_root,$(1)) && \
	$(PY) -m harness run --table $(1) --profile full --seeds $(SEEDS) $(TRAIN_ARGS) $(LAUNCH_ARGS) \
	--data-root $(call data_root,$(1)) $(ROWS_ARG) && \
	$(MAKE) --no-print-directory sync-help PROFILE=full

reproduce-table3: install
	$(call reproduce,table3)
reproduce-table6: install
	$(call reproduce,table6)
reproduce-pascal_context: install
	$(call reproduce,pascal_context)
reproduce-cityscapes: install
	$(call reproduce,cityscapes)

# the authors' released models, converted into CHECKPOINTS/<row>.pth (harness convert-official),
# evaluated single- and multi-scale; the report shows them as the "released checkpoint" column
evaluate = for scale in '' --multi-scale; do $(PY) -m harness evaluate --table $(1) \
	--checkpoints $(CHECKPOINTS) --data-root $(call data_root,$(1)) $(ROWS_ARG) $(LAUNCH_ARGS) \
	$$scale || exit 1; done

evaluate-table3 evaluate-table6 evaluate-pascal_context evaluate-cityscapes: evaluate-%: install
	$(call evaluate,$*)

# every row's full-profile job at its real size for a few iterations (synthetic data at each
# dataset's image sizes, random weights in the release layout): train, resume, evaluate,
# measured into reports/rehearsal/ (what `plan` takes GPU-hours from). The default suits a CPU
# (the real batch of ViT-L at 640 or 768 pixels does not fit a small machine); on a GPU, at the
# real batch:
# make rehearse REHEARSE_ARGS='--device cuda'
REHEARSE_ARGS ?= --iters 2 --batch 1
# every table: each dataset's rows on a synthetic copy in its layout and at its image sizes
# (Pascal Context ~500x375 at crop 480, Cityscapes 2048x1024 at crop 768)
REHEARSE_TABLES ?= table3 table6 pascal_context cityscapes
rehearse: install
	$(PY) -m harness rehearse $(foreach t,$(REHEARSE_TABLES),--table $(t)) $(ROWS_ARG) \
		$(REHEARSE_ARGS)

# speed of our row models against stock mmseg (reports/bench/bench.md); on a GPU machine:
# make bench BENCH_ARGS='--device cuda --amp bf16 --tf32'
BENCH_ARGS ?=
bench: install
	$(PY) -m harness bench $(BENCH_ARGS)

# the reports of each profile that has a work folder (a table without job folders keeps its
# report; with none at all, `report` says there is nothing to report and fails)
report: install
	@ran=; for profile in smoke full; do [ -d work_dirs/$$profile ] || continue; ran=1; \
		echo "$(PY) -m harness report $(TABLES_ARG) --profile $$profile"; \
		$(PY) -m harness report $(TABLES_ARG) --profile $$profile || exit; \
	done; [ -n "$$ran" ] || $(PY) -m harness report $(TABLES_ARG) --profile smoke

sync-help:
	@$(PY) -m harness sync-help

# scripts/gpu_check.sh's stages on the CPU at tiny sizes, into a temporary folder
# (DRY_RUN_DIR= to keep the files somewhere): the script rehearsed before it meets a GPU
gpu-check-dry-run: install
	PY=$(PY) scripts/gpu_check.sh --dry-run $(DRY_RUN_DIR)

clean:
	rm -rf work_dirs reports/smoke .cache/synthetic_ade20k .cache/synthetic_pascal_context \
		.cache/synthetic_cityscapes .pytest_cache
