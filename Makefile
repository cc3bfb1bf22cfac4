# Two entry points for a fresh Debian machine with Python 3.11 (see README "Quick start"):
#   make demo   set up .venv and run the demo on the packaged KITTI frame
#   make test   set up .venv and run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.geodepth-installed
SYSPKGS := libusb-1.0-0 libvulkan1 mesa-vulkan-drivers
OUT    ?= out/demo

.PHONY: setup sysdeps demo test bench clean-venv

sysdeps:
	@missing=""; for p in $(SYSPKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = "0" ]; then echo "installing system packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "warning: missing system packages$$missing (Open3D needs them); run as root or install them"; fi; \
	fi

$(STAMP): setup.py | sysdeps
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# the CPU wheel of torch that lies on this machine; setup.py does not pin torch
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[all]"
	touch $(STAMP)

setup: sysdeps $(STAMP)

demo: setup
	$(BIN)/geodepth demo --out $(OUT) --overwrite

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/geodepth bench all

clean-venv:
	rm -rf $(VENV)
