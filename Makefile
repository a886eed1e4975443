# Two commands for a fresh machine (both safe to repeat):
#   make run    set up .venv and start the app
#   make test   set up .venv and run the tests
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: setup run test lint demo clean

$(STAMP): requirements.txt
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Python 3.11)"; exit 1; }
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -r requirements.txt
	touch $(STAMP)

# The browser decoder's runtime (onnxruntime-web, pinned by its package-lock.json) comes
# from npm into the component's vendor/ folder (not in git). Without npm the app still
# works: it decodes on the server and says so. The .wasm is stored gzipped: Streamlit
# would gzip it anew on every request, seconds of the server's event loop for 14 MB.
COMPONENT := dogvae/components/latent_canvas
VENDOR := $(COMPONENT)/vendor/.installed
ORT_DIST := node_modules/onnxruntime-web/dist
$(VENDOR): $(COMPONENT)/package.json $(COMPONENT)/package-lock.json
	@if command -v npm >/dev/null; then \
		cd $(COMPONENT) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error \
		&& rm -rf vendor && mkdir vendor \
		&& cp $(ORT_DIST)/ort.wasm.bundle.min.mjs $(ORT_DIST)/ort-wasm-simd-threaded.wasm vendor/ \
		&& gzip -9 -n vendor/ort-wasm-simd-threaded.wasm \
		&& rm -rf node_modules && touch vendor/.installed; \
	else echo "npm not found: the app will decode on the server (see $(COMPONENT)/README.md)"; fi

setup: $(STAMP) $(VENDOR)

run: $(STAMP) $(VENDOR)
	$(VENV)/bin/python -m streamlit run serve.py

# Real-browser tests drive Debian's chromium (Playwright's own browser download is not used).
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-color-emoji >/dev/null; \
	else echo "chromium not found and cannot be installed here: browser tests will be skipped (with CI=true they fail)"; fi

test: $(STAMP) $(VENDOR) $(CHROMIUM)
	$(VENV)/bin/python -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache $(COMPONENT)/vendor $(COMPONENT)/node_modules

# A CLI tour on the shared dog photos (needs ../shared/data).
demo: $(STAMP)
	$(VENV)/bin/python -m dogvae train ../shared/data/dogs.csv --limit 500 --epochs 5 --out runs/demo
	$(VENV)/bin/python -m dogvae generate runs/demo --out runs/demo-samples.png --scale 2
	$(VENV)/bin/python -m dogvae interpolate runs/demo --out runs/demo-interpolation.gif --scale 2
	$(VENV)/bin/python -m dogvae evaluate runs/demo ../shared/data/dogs.csv --limit 500
