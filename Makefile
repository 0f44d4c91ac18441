# brainalign: `make demo` and `make test` are the only commands a fresh machine needs.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
UV_VERSION := 0.13.8
# The environment: ./.venv, or uv's UV_PROJECT_ENVIRONMENT when set (/opt/venv in the image).
VENV ?= $(or $(UV_PROJECT_ENVIRONMENT),.venv)
BIN := $(VENV)/bin
# Offline copy of the public GitHub inputs laid out by URL (README "Data"); used when present.
BRAINALIGN_MIRROR ?= $(if $(wildcard ../shared/mirror/SHA256SUMS),$(abspath ../shared/mirror),)
export BRAINALIGN_MIRROR
export PATH := $(abspath $(BIN)):$(PATH)

# The cluster tests start a single-node SLURM on this machine (tests/cluster).
SLURM_PACKAGES := slurmctld slurmd slurm-client munge
TEX_PACKAGES := latexmk texlive-latex-base texlive-latex-recommended texlive-latex-extra \
	texlive-fonts-recommended lmodern

IMAGE ?= brainalign:latest
GIT_COMMIT = $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LOCK_SHA256 = $(shell sha256sum uv.lock | cut -d' ' -f1)
WORKDIR := /home/brainalign/brainalign
# Inside the image: the host's mirror (when set) read-only at /mirror.
DOCKER_MIRROR = $(if $(BRAINALIGN_MIRROR),-v $(BRAINALIGN_MIRROR):/mirror:ro -e BRAINALIGN_MIRROR=/mirror,)
# docker-demo / docker-repro work on this checkout, mounted over the image's copy: data/, the DVC
# cache, build/ and dvc.lock land here, owned by you, and survive the container.
DOCKER_WORKSPACE = --user $(shell id -u):$(shell id -g) -e HOME=/tmp -v $(CURDIR):$(WORKDIR)

.PHONY: setup tex slurm test lint demo verify repro cluster-repro fetch clean help docker-build docker-test docker-demo docker-verify docker-repro docker-shell

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(BIN)/.synced: pyproject.toml uv.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/uv --version 2>/dev/null | grep -qx "uv $(UV_VERSION).*" || { \
	  $(BIN)/python -m pip --version >/dev/null 2>&1 || $(BIN)/python -m ensurepip -q; \
	  $(BIN)/python -m pip install -q --disable-pip-version-check uv==$(UV_VERSION); }
	$(BIN)/uv sync --frozen --compile-bytecode
	touch $@

setup: $(BIN)/.synced ## Create .venv from uv.lock (exact versions, hashes checked)

tex: ## Install TeX Live + latexmk from Debian (for the paper stage) unless latexmk is present
	@command -v latexmk >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $(TEX_PACKAGES); }

slurm: ## Install SLURM + munge from Debian (the cluster tests start a local one) unless present
	@{ test -x /usr/sbin/slurmctld && test -x /usr/sbin/slurmd && test -x /usr/sbin/munged && \
	  command -v sbatch >/dev/null; } || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $(SLURM_PACKAGES); }

test: setup tex slurm ## Run the test suite
	$(BIN)/python -m pytest

lint: setup ## ruff
	$(BIN)/ruff check src tests benchmarks

fetch: setup ## Fetch the configured inputs into data/ (mirror first) and track them in data.dvc
	$(BIN)/brainalign fetch

demo: fetch tex ## The embedded default, offline, CPU: dvc repro of params.yaml
	$(BIN)/dvc repro

cluster-repro: setup ## The stale stages as SLURM jobs, then dvc commit (README "Running on a cluster")
	$(BIN)/brainalign cluster run

verify: setup ## Compare this workspace's results with the committed ones and the published numbers
	$(BIN)/brainalign verify

repro: setup tex ## The paper: switch params.yaml to the paper profile, fetch lab + HEAR data, dvc repro
	$(BIN)/brainalign profile paper
	$(BIN)/brainalign fetch
	$(BIN)/dvc repro

docker-build: ## Build the image (labels: git commit, uv.lock sha256)
	docker build --build-arg GIT_COMMIT=$(GIT_COMMIT) --build-arg LOCK_SHA256=$(LOCK_SHA256) \
	  -t $(IMAGE) .

docker-test: docker-build ## The test suite inside the image
	docker run --rm $(DOCKER_MIRROR) $(IMAGE) make test

docker-demo: docker-build ## The embedded default inside the image (CPU), on this checkout
	docker run --rm $(DOCKER_WORKSPACE) $(DOCKER_MIRROR) $(IMAGE) make demo

docker-repro: docker-build ## The paper inside the image on the GPUs (--gpus all), on this checkout
	docker run --rm --gpus all $(DOCKER_WORKSPACE) $(DOCKER_MIRROR) $(IMAGE) make repro

docker-verify: docker-build ## brainalign verify inside the image, on this checkout
	docker run --rm $(DOCKER_WORKSPACE) $(DOCKER_MIRROR) $(IMAGE) make verify

docker-shell: ## An interactive shell inside the image, on this checkout
	docker run --rm -it $(DOCKER_WORKSPACE) $(DOCKER_MIRROR) $(IMAGE) bash

clean: ## Remove build outputs (keeps data/ and the DVC cache)
	rm -rf build results .pytest_cache .ruff_cache
