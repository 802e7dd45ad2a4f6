# Vaxelbox. `make run` and `make test` are the two commands the README starts with;
# both work on a fresh Debian machine as root and install what they need.
SHELL := /bin/bash
# Debian's CPython, the boards' interpreter (README, "On a real board"), built with PGO and LTO; not
# whichever python3 comes first on PATH: pyenv's, built without them, ran the relay ~8 % slower per
# call (issue 12). PYTHON=... picks another; the venv is made again when its interpreter changes.
PYTHON ?= $(firstword $(wildcard /usr/bin/python3) python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell { cat pyproject.toml; command -v $(PYTHON); } | sha1sum | cut -c1-12)
ARGS ?=
# Debian packages the tests use as real peers or tools; missing ones are installed, never skipped.
TEST_DEBS := systemd make sip-tester kamailio kamailio-tls-modules kamailio-presence-modules curl openssl \
  iproute2 nftables dnsmasq-base isc-dhcp-server fail2ban \
  rauc squashfs-tools e2fsprogs libubootenv-tool u-boot-tools dbus-daemon

# `$(NEED_DEBS) pkg...` installs the Debian packages that are missing (needs root).
NEED_DEBS = need_debs() { missing=""; for pkg in "$$@"; do \
	  dpkg-query -W -f='$${Status}' "$$pkg" 2>/dev/null | grep -q "ok installed" || missing="$$missing $$pkg"; \
	done; \
	[ -z "$$missing" ] || { echo "installing Debian packages:$$missing"; apt-get update -qq \
	  && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; }; }; need_debs

.PHONY: setup run demo-call test test-debs lint format clean schemas bench hil companion image

# Real MicroPython (the WebAssembly port from npm, run by Debian's Node) for the companion's tests.
MCU_BENCH := firmware/tests/mcu/node_modules/.package-lock.json
$(MCU_BENCH): firmware/tests/mcu/package-lock.json
	@command -v node >/dev/null || { $(NEED_DEBS) nodejs; }
	@command -v npm >/dev/null || { $(NEED_DEBS) npm; }
	cd firmware/tests/mcu && npm ci --no-audit --no-fund --silent
	@touch $@

# The companion microcontroller's file set for BOARD (mpy-cross), in build/companion/, e.g.
# make companion BOARD=boards/rpi-4b.yaml. Deploy it
# with mpremote (README, "The companion").
companion: setup
	$(BIN)/python -m vaxelbox.hw.companion_build $(BOARD) build/companion --mpy

# The agent for the real boards (README, "Update an appliance"): its wheel set for their Python
# (dependencies fetched now, none on the board), a manifest, and per board a RAUC bundle and our
# signed bundle around it, in build/image/; keys made once in build/keys/ (never committed).
# make image VERSION=0.2.0 [IMAGE_BOARDS="boards/rpi-4b.yaml"] [BASE_ROOTFS=debian-arm64.tar]
VERSION ?= $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' pyproject.toml)
IMAGE_BOARDS ?= boards/rpi-4b.yaml boards/rpi-cm4-dual-nic.yaml boards/nanopi-r5s.yaml
image: setup
	@$(NEED_DEBS) rauc squashfs-tools e2fsprogs openssl
	$(BIN)/python -m vaxelbox.update.image $(IMAGE_BOARDS) --version $(VERSION) --out build/image --keys build/keys$(if \
	  $(BASE_ROOTFS), --base-rootfs $(BASE_ROOTFS))

setup: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { $(NEED_DEBS) python3 python3-venv; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	  || { echo "Vaxelbox needs Python 3.11 or newer; $(PYTHON) is older" >&2; exit 1; }
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { $(NEED_DEBS) python3-venv; }
	@[ -x $(BIN)/python ] && grep -qx "executable = $$(realpath "$$(command -v $(PYTHON))")" $(VENV)/pyvenv.cfg \
	  || $(PYTHON) -m venv --clear $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test]'
	@# labgrid's pyserial fork and pyserial install the same `serial` package; the fork (pyserial
	@# 3.5 with labgrid's RFC 2217 fixes) must own it, whichever pip installed last.
	$(BIN)/python -m pip install -q --disable-pip-version-check --force-reinstall --no-deps \
	  "pyserial-labgrid==$$($(BIN)/python -c 'from importlib.metadata import version; print(version("pyserial-labgrid"))')"
	@rm -f $(VENV)/.installed-* && touch $@

# The agent on the embedded demo office (or pass ARGS="--site my-site.toml"). Its state lives in
# this clone ($(DATA), removed by make clean), not in the user's state directory that
# `vaxelbox run` uses without --data; a --data in ARGS wins.
DATA ?= .vaxelbox-data
run: setup
	$(BIN)/vaxelbox run --data $(abspath $(DATA)) $(ARGS)

# A local call on the demo office, while `make run` runs in another terminal (its cloud is made up,
# so the office runs locally): Björn's phone (102) registers and answers, Anna's (101) calls him.
# Two sipp phones with the demo site's credentials.
# The agent's LAN side: LAN=127.0.0.1:5070 after make run ARGS="--lan 127.0.0.1:5070". The demo phones
# take free ports of their own (sipp picks them), so they never clash with a moved agent.
LAN ?= 127.0.0.1:5060
SIPP_DEMO = sipp $(LAN) -i 127.0.0.1 -m 1 -timeout 30s -timeout_error -nostdin -key expires 120
demo-call:
	@$(NEED_DEBS) sip-tester
	@echo "Björn's phone (102) registers and waits; Anna's phone (101) calls 102 through the appliance."
	@cd $$(mktemp -d) && { $(SIPP_DEMO) -sf $(CURDIR)/firmware/tests/peers/sipp/register_wait.xml \
	  -oocsf $(CURDIR)/firmware/tests/peers/sipp/answer.xml -s demo-102 -au demo-102 -ap demo-pw-bjorn-81d2 \
	  -d 6000 >bjorn.log 2>&1 & } && sleep 1 \
	  && $(SIPP_DEMO) -sf $(CURDIR)/firmware/tests/peers/sipp/local_call_hold.xml -s demo-101 -au demo-101 \
	  -ap demo-pw-anna-4f9c -key callee 102 -d 3000 >anna.log 2>&1 \
	  && echo "Anna called Björn: answered, talked 3 s, hung up. The agent's log shows 'local call ...'." \
	  || { tail -5 anna.log; echo "the call failed: is 'make run' running (on $(LAN)? else LAN=...), and has it said mode local?" >&2; \
	       exit 1; }; wait

# The whole suite: lint, then every test (nothing is skipped for a missing tool), then the HIL
# suite against the simulated board.
test: setup lint test-debs $(MCU_BENCH)
	$(BIN)/pytest
	$(MAKE) --no-print-directory hil

# Hardware in the loop: `make hil` (simulated board) or `make hil BOARD=boards/<name>.yaml`.
# SUITES picks suites by number (e.g. SUITES="1 2 3"); the lab's HIL_* variables may be given here too.
# Writes $(HIL_RESULTS)/junit.xml and report.md (console and agent log on failure).
BOARD ?= boards/simboard.yaml
SUITES ?= 1 2 3 4 5 6 7 8 9
HIL_RESULTS ?= hil-results
hil: setup test-debs $(MCU_BENCH)
	@mkdir -p $(HIL_RESULTS)
	$(BIN)/python hil-tests/environment.py $(BOARD) $(HIL_RESULTS)/environment.yaml
	$(BIN)/pytest $(foreach n,$(SUITES),hil-tests/test_$(n)_*.py) -c hil-tests/pytest.ini --board $(BOARD) \
	  --lg-env $(HIL_RESULTS)/environment.yaml --lg-log $(HIL_RESULTS) --junitxml $(HIL_RESULTS)/junit.xml \
	  --report $(HIL_RESULTS)/report.md; status=$$?; echo "HIL report: $(HIL_RESULTS)/report.md"; exit $$status

test-debs:
	@$(NEED_DEBS) $(TEST_DEBS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	@# An agent running on $(DATA) would go on without its files (and its venv): stop it first.
	@if [ -d $(DATA) ] && ! flock -n $(DATA) true; then \
	  echo "make clean: an agent is running on $(DATA) (make run?): stop it first; nothing removed" >&2; exit 1; fi
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis build $(DATA)

# Regenerate the committed JSON Schemas after changing the site or board model.
schemas: setup
	$(BIN)/vaxelbox schema site > firmware/vaxelbox/site/site.schema.json
	$(BIN)/vaxelbox schema board > boards/board.schema.json

# Benchmarks against real peers in the same run; results land in bench/results/.
# sip_relay.py's soak is 10 minutes here (SOAK_MINUTES=1 to try it); its command line is in the results file.
SOAK_MINUTES ?= 10
bench: setup test-debs
	@[ -x $(BIN)/py-spy ] || $(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test,bench]'
	$(BIN)/python bench/sip_relay.py --soak-minutes $(SOAK_MINUTES)
	$(BIN)/python bench/sip_messages.py
	@$(NEED_DEBS) valgrind
	PYTHON=$(BIN)/python bench/instructions.sh
	$(BIN)/python bench/coap_mgmt.py
	$(BIN)/python bench/failback.py
	$(BIN)/python bench/local_calls.py
	$(BIN)/python bench/cloud_footprint.py
	$(BIN)/python bench/wrong_password.py
	$(BIN)/python bench/presence.py
