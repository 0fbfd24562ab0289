PYTHON ?= python3
PIP = $(PYTHON) -m pip
# What the tests need from Debian, where it is looked for (override to see the message when it is absent).
FASHION_MNIST ?= /usr/share/datasets/fashion-mnist
CHROMIUM ?= chromium
APT_GET ?= apt-get

.PHONY: install system-packages test demo clean

# torch first, pinned: on this platform torch==2.13.0 is a local CPU wheel, while an unpinned
# torch would pull a multi-GB CUDA build. The stamp makes a second `make test` skip the install.
.installed: pyproject.toml
	$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[test]'
	touch .installed

# The stamp alone would lie in a new environment beside an old checkout, or after another checkout's
# `pip install -e` (the tests' subprocesses would run that one): install again unless this Python has
# the test extras and batchlab installed from here, editable (a copy would go stale as the code changes).
INSTALLED_HERE = import importlib.metadata as m, importlib.util as u, json, os, sys, urllib.parse as p; \
	sys.path = [d for d in sys.path if d not in ('', os.getcwd())]; \
	origin = json.loads(m.distribution('batchlab').read_text('direct_url.json') or '{}'); url = origin.get('url', ''); \
	here = origin.get('dir_info', {}).get('editable') and url.startswith('file:') and \
		os.path.realpath(p.unquote(p.urlparse(url).path)) == os.path.realpath('.'); \
	sys.exit(not here or None in [u.find_spec(n) for n in ('torch', 'pytest', 'hypothesis', 'distributed', 'tensorboard', 'mlflow')])

install:
	@$(PYTHON) -c "$(INSTALLED_HERE)" 2>/dev/null || rm -f .installed
	@$(MAKE) --no-print-directory .installed

# The tests train on the real Fashion-MNIST (Debian's dataset-fashion-mnist) and render report.html in a
# real browser (Debian's chromium). Missing ones are installed with apt-get where there is one and we may
# (root, or sudo without a password); otherwise one line says what to install, and make stops.
system-packages:
	@missing=""; \
	test -d "$(FASHION_MNIST)" || missing="$$missing dataset-fashion-mnist"; \
	command -v "$(CHROMIUM)" >/dev/null 2>&1 || missing="$$missing chromium"; \
	test -z "$$missing" && exit 0; \
	if [ "$$(id -u)" = 0 ]; then sudo=""; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; else sudo=no; fi; \
	if [ "$$sudo" != no ] && command -v "$(APT_GET)" >/dev/null 2>&1; then \
		echo "installing$$missing (apt-get)"; \
		$$sudo env DEBIAN_FRONTEND=noninteractive "$(APT_GET)" update -qq && \
		$$sudo env DEBIAN_FRONTEND=noninteractive "$(APT_GET)" install -y -qq $$missing >/dev/null && \
		test -d "$(FASHION_MNIST)" && command -v "$(CHROMIUM)" >/dev/null 2>&1 && exit 0; \
	fi; \
	echo "error: the tests need the Debian packages$$missing: install them (apt-get install$$missing) and run make test again" >&2; \
	exit 1

test: install system-packages
	$(PYTHON) -m pytest -q

demo: install
	batchlab sweep configs/quickstart.yaml
	batchlab report runs/quickstart

clean:
	rm -rf runs .installed .pytest_cache .hypothesis
