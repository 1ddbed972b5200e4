# pymaster: the two commands (run, test), plus bench and install.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEBIAN_TEST_PACKAGES := swaks postfix
CONFIG_DIR := $(CURDIR)/etc

.PHONY: run test bench install uninstall deb-packages accounts clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

# Starts the in-tree instance in the foreground: etc/ and spool/, 127.0.0.1:2525.
# As root, services drop privileges to mail_owner (postfix) and postdrop is
# group setgid_group (postdrop): create them when missing, as Postfix's install does.
accounts:
	@if [ "$$(id -u)" = 0 ]; then \
	  getent group postdrop >/dev/null || { echo "creating group postdrop (setgid_group)"; groupadd --system postdrop; }; \
	  getent passwd postfix >/dev/null || { echo "creating user postfix (mail_owner)"; \
	    useradd --system --user-group --home-dir /nonexistent --shell /usr/sbin/nologin postfix; }; \
	fi

run: $(STAMP) accounts
	mkdir -p spool/mailboxes
	if [ "$$(id -u)" = 0 ]; then chown 65534:65534 spool/mailboxes; fi
	$(BIN)/postfix -c $(CONFIG_DIR) start-fg

# Debian packages that end-to-end tests talk to. Installing them needs root;
# without root the tests that need them skip with a reason.
deb-packages:
	@missing=""; for p in $(DEBIAN_TEST_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "make: Debian packages$$missing are missing and installing them needs root (sudo make deb-packages); tests that use them will skip"; \
	  fi; \
	fi

test: $(STAMP) deb-packages accounts
	$(BIN)/python -m pytest -n 2 -q tests

bench: $(STAMP) deb-packages
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) build *.egg-info
