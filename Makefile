PYTHON ?= python3
PIP = $(PYTHON) -m pip

.PHONY: install test demo clean

# torch first, pinned: on this platform torch==2.13.0 is a local CPU wheel, while an unpinned
# torch would pull a multi-GB CUDA build. The stamp makes a second `make test` skip the install.
.installed: pyproject.toml
	$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[test]'
	touch .installed

install: .installed

test: .installed
	$(PYTHON) -m pytest -q

demo: .installed
	batchlab sweep configs/quickstart.yaml
	batchlab report runs/quickstart

clean:
	rm -rf runs .installed .pytest_cache
