# pymaster: the two commands (run, test), plus bench and install.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEBIAN_TEST_PACKAGES := swaks postfix postfix-pcre postfix-lmdb dovecot-core pflogsumm postgrey opendkim opendkim-tools \
  mariadb-server postgresql slapd ldap-utils postfix-mysql postfix-pgsql postfix-ldap memcached
CONFIG_DIR := $(CURDIR)/etc

.PHONY: run test soak lint bench install uninstall upgrade deb-packages accounts clean

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

# Tests marked "system" install into the real root (CI only): they run alone,
# first, so that nothing else sees the system while it is changed.
# The linter and the type checker (configured in pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check pymaster services
	$(BIN)/mypy pymaster services

# Unit tests run four at a time on two cores: many of them wait (databases,
# Debian's postmap, which sleeps a second after each fatal error); the
# end-to-end tests start whole mail systems, two at a time.
test: $(STAMP) lint deb-packages accounts
	$(BIN)/python -m pytest -q -m system tests
	$(BIN)/python -m pytest -n 4 -q -m "not system" --ignore=tests/e2e tests
	$(BIN)/python -m pytest -n 2 -q -m "not system" tests/e2e

# The fault suite (tests/e2e/test_faults.py) at SOAK_SCALE times its CI size:
# SOAK_SCALE thousand messages, every program killed SOAK_SCALE times, a new
# seed each run; the fuzzers, slowloris and the storm with 20 times their inputs.
SOAK_SCALE ?= 5
soak: $(STAMP) deb-packages accounts
	PYMASTER_FAULT_SCALE=$(SOAK_SCALE) PYMASTER_SOAK=1 $(BIN)/python -m pytest -q \
	  tests/e2e/test_faults.py tests/test_fuzz_parsers.py tests/test_fuzz_session.py \
	  tests/e2e/test_fuzz_smtpd.py

# make bench: the whole report, about 25 minutes on 2 cores; make bench
# BENCH=quick: the main table's Done-when rows only, about 3 minutes. Both
# print the tables and write them to bench/results/latest.md.
BENCH ?=
bench: $(STAMP) deb-packages
	$(BIN)/python -m bench.run $(if $(filter quick,$(BENCH)),--quick)

# System installation (as root): docs/install.md. Directory names are
# Postfix's; override any of them, e.g. make install DESTDIR=/tmp/stage.
DESTDIR ?=
PREFIX ?= /usr
config_directory ?= /etc/postfix
queue_directory ?= /var/spool/postfix
command_directory ?= $(PREFIX)/sbin
daemon_directory ?= $(PREFIX)/lib/pymaster/libexec
venv_directory ?= $(PREFIX)/lib/pymaster/venv
data_directory ?= /var/lib/postfix
mail_spool_directory ?= /var/mail
sendmail_path ?= $(command_directory)/sendmail
newaliases_path ?= $(PREFIX)/bin/newaliases
mailq_path ?= $(PREFIX)/bin/mailq
sendmail_compat ?= $(PREFIX)/lib/sendmail
mail_owner ?= postfix
setgid_group ?= postdrop
initd_directory ?= /etc/init.d
systemd_directory ?= /lib/systemd/system
doc_directory ?= $(PREFIX)/share/doc/pymaster
manifest ?= $(PREFIX)/lib/pymaster/installed-files
# The system's interpreter: the services run as mail_owner and users run
# sendmail, so it must not live under a private home directory (pyenv).
INSTALL_PYTHON ?= $(firstword $(wildcard /usr/bin/python3) $(PYTHON))
INSTALL_SETTINGS = DESTDIR=$(DESTDIR) config_directory=$(config_directory) \
	queue_directory=$(queue_directory) command_directory=$(command_directory) \
	daemon_directory=$(daemon_directory) venv_directory=$(venv_directory) \
	data_directory=$(data_directory) mail_spool_directory=$(mail_spool_directory) \
	sendmail_path=$(sendmail_path) newaliases_path=$(newaliases_path) \
	mailq_path=$(mailq_path) sendmail_compat=$(sendmail_compat) \
	mail_owner=$(mail_owner) setgid_group=$(setgid_group) \
	initd_directory=$(initd_directory) systemd_directory=$(systemd_directory) \
	doc_directory=$(doc_directory) manifest=$(manifest)

install:
	$(INSTALL_PYTHON) install/install.py install $(INSTALL_SETTINGS)

# Reinstall the code, keep configuration and queue, set-permissions, reload.
upgrade:
	$(INSTALL_PYTHON) install/install.py upgrade $(INSTALL_SETTINGS)

# Configuration, queue and accounts stay, as package managers leave them.
uninstall:
	$(INSTALL_PYTHON) install/install.py uninstall $(INSTALL_SETTINGS)

clean:
	rm -rf $(VENV) build *.egg-info
