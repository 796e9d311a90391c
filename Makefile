# gmcourse: everything a new machine needs is done by these targets.
#   make book   build the executed book into _build/html   (the main job)
#   make test   run the whole test suite
# Both create .venv and install the pinned requirements first (once; a second run
# skips installs that are current).

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

.PHONY: all book test venv exercises grade clean clean-book help

all: book test

help:
	@sed -n '2,6p' Makefile

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
	$(RUN) $(BIN)/jupyter-book build . --builder html -W -n --keep-going || exit 1; \
	$(RUN) $(BIN)/python -m gmcourse.bookcheck _build/html || exit 1; \
	echo "make book: $$(( $$(date +%s) - start )) s; open _build/html/index.html"

test: $(STAMP)
	@start=$$(date +%s); \
	$(RUN) $(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadscope $(PYTEST_ARGS); status=$$?; \
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
