# uniseg3d: `make repro` runs the DVC pipeline on the synthetic default, `make test` the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: repro test install browser clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

repro: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

test: $(STAMP)
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || $(MAKE) --no-print-directory browser
	$(BIN)/python -m pytest

# Debian's Chromium and ChromeDriver for the browser test of `uniseg3d serve` (tests/test_serve.py);
# where they cannot be installed (not root, no apt-get), that one test skips and says why.
browser:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver \
		|| echo "chromium could not be installed: the browser test will skip"; \
	else echo "chromium not installed (needs root and apt-get): the browser test will skip"; fi

clean-venv:
	rm -rf $(VENV)
