# Two commands do all the set-up on a fresh machine:
#   make course   -> builds .venv, provides Fashion-MNIST, runs the notebook series (embedded, offline)
#                    and builds the course site in build/site/
#   make test     -> builds .venv and runs the whole test suite
# Also: make lab (JupyterLab with the course kernel), make bench (benchmarks),
#   make classroom (as root: the course's JupyterHub on localhost with demo accounts).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROFILE ?= embedded
OUT ?= build
# course run fails (after running every notebook) when one cell ran longer than this many
# seconds: 60 on the embedded profile, the course's promise that no cell keeps a student waiting
# longer (a cold run on 2 quiet cores, two notebooks at a time, peaks at about 38 s). On a slower
# machine, or to skip the check: make course MAX_CELL_SECONDS=
MAX_CELL_SECONDS ?= $(if $(filter embedded,$(PROFILE)),60)
# notebooks run at once by make course, each kernel with its share of the CPUs (course run --jobs):
# the course's small networks gain about 5% from a second thread, so two one-thread notebooks side
# by side use the cores a lone notebook leaves idle (cold embedded series on 2 cores: 575 s of
# notebooks one at a time, 410 s two at a time). JOBS=1: one after another.
JOBS ?= 2
# System packages (Debian) the course uses when apt is available and we are root:
# the Fashion-MNIST data, bubblewrap for sandboxed grading, Chromium to check rendered pages
# and to drive JupyterLab in the classroom test, acl to let hub users reach a private Python.
APT_PACKAGES := dataset-fashion-mnist bubblewrap chromium acl
# configurable-http-proxy (npm) for the JupyterHub in deploy/jupyterhub/
HUB_DIR := deploy/jupyterhub
PROXY := $(HUB_DIR)/node_modules/.bin/configurable-http-proxy

.PHONY: course test lab bench venv data system-deps classroom-deps classroom clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=/path/to/python3.11'"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e .
	@touch $(STAMP)

# Debian packages: installed only when apt-get is present and we are root; otherwise the
# library falls back to verified downloads (data) or tells you what is missing.
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then echo "system packages present: $(APT_PACKAGES)"; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null; \
	else echo "note: not root or no apt-get; skipping Debian packages:$$missing"; fi

data: venv system-deps
	$(BIN)/course data fashion_mnist

# Last step: the course site (front page, previous/next, search) from the executed notebooks,
# built offline by `course site` into $(OUT)/site/.
course: data
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/course run --profile $(PROFILE) --out $(OUT) --jobs $(JOBS) \
	  $(if $(MAX_CELL_SECONDS),--max-cell-seconds $(MAX_CELL_SECONDS))
	@if [ "$(PROFILE)" = embedded ]; then \
	  echo "Checking the results the course claims (tests/test_embedded_results.py)"; \
	  COURSE_RESULTS_DIR=$(OUT) $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_embedded_results.py; fi
	$(BIN)/course site --build $(OUT)
	@echo "Done: open $(OUT)/site/index.html (the course site; $(OUT)/index.html lists the plain pages)"

# The classroom (deploy/jupyterhub): JupyterHub comes with the venv (pyproject.toml), the proxy
# from npm into $(HUB_DIR)/node_modules (npm ci: the versions in package-lock.json).
classroom-deps: venv system-deps $(PROXY)

$(PROXY): $(HUB_DIR)/package.json $(HUB_DIR)/package-lock.json
	@if ! command -v npm >/dev/null && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  echo "installing Debian packages: nodejs npm"; \
	  apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm >/dev/null; fi
	@if command -v npm >/dev/null; then \
	  npm ci --prefix $(HUB_DIR) --no-audit --no-fund --loglevel=error && touch $(PROXY); \
	else echo "note: npm not found; the classroom (JupyterHub) needs configurable-http-proxy from npm"; fi

# As root: demo accounts (demo-instructor, demo-student1..3; passwords printed) and the hub
# on http://127.0.0.1:8000 until Ctrl-C. A class: see README.md, "Running a class on JupyterHub".
classroom: classroom-deps
	@[ "$$(id -u)" = 0 ] || { echo "error: make classroom needs root (Unix accounts, PAM logins); run it with sudo"; exit 1; }
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/course classroom demo

# nbgrader runs helper commands (alembic) from the venv, so its bin/ goes first on PATH.
test: data classroom-deps
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest

# The notebooks ask for the kernel "python3": inside .venv that is the course's Python, shown as
# "Transfer course (.venv)" (a kernel spec in .venv only; other Jupyter installations keep theirs).
# Its kernels inherit the thread settings of course_utils.threads (as under course run), which
# act only when set before the kernel starts.
LAB_DIR ?= notebooks/
LAB_ARGS ?=
lab: venv
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Transfer course (.venv)" >/dev/null
	env $$($(BIN)/python -c "from course_utils.threads import thread_env; print(*(f'{k}={v}' for k, v in thread_env().items()))") \
	  $(BIN)/jupyter lab $(LAB_DIR) $(LAB_ARGS)

bench: venv
	$(BIN)/course bench all

clean:
	rm -rf $(OUT) .pytest_cache
