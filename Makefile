# gmcourse: everything a new machine needs is done by these targets.
#   make book   build the executed book into _build/html   (the main job)
#   make test   run the whole test suite
#   make timings  per-chapter execution times of the last build (timings.md, timings.csv)
# Both create .venv and install the pinned requirements first (once; a second run
# skips installs that are current). GMCOURSE_SCALE=full make book  trains every chapter
# at full size (on the GPU when there is one) and builds into _build/full/_build/html.

PYTHON ?= python3
VENV   := .venv
BIN    := $(CURDIR)/$(VENV)/bin
STAMP  := $(VENV)/.installed
# nbgrader calls `alembic` from PATH; one torch thread per process avoids two
# processes on two cores slowing each other down.
RUN    := PATH="$(BIN):$$PATH" OMP_NUM_THREADS=1 PYTHONHASHSEED=0
ASSIGNMENTS := $(notdir $(wildcard solutions/A*))
PYTEST_ARGS ?=
# test processes in parallel (pytest-xdist); `make test PYTEST_WORKERS=0` runs in one process
PYTEST_WORKERS ?= auto
# The execution cache knows a chapter by its code, which is the same at both sizes: a full-size
# build has a folder (and a cache) of its own.
ifeq ($(GMCOURSE_SCALE),full)
BUILD_DIR   := _build/full/_build
PATH_OUTPUT := --path-output _build/full
else
BUILD_DIR   := _build
PATH_OUTPUT :=
endif
SITE := $(BUILD_DIR)/html
BUILD_BOOK := $(RUN) $(BIN)/jupyter-book build . $(PATH_OUTPUT) --builder html -W -n --keep-going

.PHONY: all book test timings venv exercises grade clean clean-book help

all: book test

help:
	@sed -n '2,9p' Makefile

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch==2.13.0 first: it is a local CPU wheel here; asking for any other version
# would pull several GB of CUDA packages.
$(STAMP): requirements.txt pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --disable-pip-version-check --quiet torch==2.13.0
	$(BIN)/python -m pip install --disable-pip-version-check --quiet -r requirements.txt
	$(BIN)/python -m pip install --disable-pip-version-check --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	touch $@

venv: $(STAMP)

book: $(STAMP)
	@start=$$(date +%s); \
	$(BUILD_BOOK) || exit 1; \
	$(RUN) $(BIN)/python -m gmcourse.bookcheck $(SITE) || exit 1; \
	$(RUN) $(BIN)/python -m gmcourse.timings $(BUILD_DIR) || exit 1; \
	echo "make book: $$(( $$(date +%s) - start )) s; open $(SITE)/index.html"

timings: $(STAMP)
	@$(RUN) $(BIN)/python -m gmcourse.timings $(BUILD_DIR)

# 1. the test suite, the chapters and the solution notebooks (nbval), in parallel, longest first
#    (conftest.py orders them); each chapter that passes goes into the book's execution cache;
# 2. the book, built from that cache;  3. every page of it in a headless browser
#    (tests/test_site.py, marker `site`).
test: $(STAMP)
	@start=$$(date +%s); \
	$(RUN) $(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadscope --no-loadscope-reorder -m "not site" $(PYTEST_ARGS); status=$$?; \
	if [ $$status -ne 0 ]; then \
	  echo "make test: the tests failed, so the book is not built and the browser check does not run"; \
	else \
	  if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	    echo "make test: NO BROWSER: chromium and chromedriver are not installed, so the browser check of the book is skipped"; \
	    echo "           (install them with: apt-get install chromium chromium-driver; .ci/run does)"; \
	  fi; \
	  $(BUILD_BOOK) && $(RUN) $(BIN)/python -m gmcourse.bookcheck $(SITE) && \
	  GMCOURSE_SITE=$(SITE) GMCOURSE_REQUIRE_SITE=1 $(RUN) $(BIN)/python -m pytest -p no:cacheprovider -m site tests/test_site.py $(PYTEST_ARGS); \
	  status=$$?; \
	fi; \
	echo "make test: $$(( $$(date +%s) - start )) s"; exit $$status

# Regenerate the student versions in exercises/ from the instructor sources in solutions/.
exercises: $(STAMP)
	@for a in $(ASSIGNMENTS); do \
	  $(RUN) $(BIN)/nbgrader generate_assignment $$a --force --no-db || exit 1; \
	done

# Grade a folder of submissions: make grade ASSIGNMENT=A1_max_likelihood SUBMISSIONS=path/to/folder
# (more options through GRADE_ARGS, e.g. GRADE_ARGS="--workers 4 --regrade")
grade: $(STAMP)
	@test -n "$(ASSIGNMENT)" -a -n "$(SUBMISSIONS)" || \
	  { echo "usage: make grade ASSIGNMENT=<one of: $(ASSIGNMENTS)> SUBMISSIONS=<folder>"; exit 2; }
	$(RUN) $(BIN)/python -m gmcourse.grading $(ASSIGNMENT) $(SUBMISSIONS) $(GRADE_ARGS)

clean-book:
	rm -rf _build

clean: clean-book
	rm -rf $(VENV) _grading .pytest_cache
