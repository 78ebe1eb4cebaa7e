# brokerd — build, test, benchmark, install.
#   make                 build brokerd, brokerctl and libbroker into build/
#   make check           layering, unit + integration tests, then all of them again under
#                        ASan+UBSan (needs root: real uids, cgroups, namespaces)
#   make check-quick     what runs without root in about a minute: layering and the unit tests,
#                        plain and under ASan+UBSan
#   make unit [T=test_escape]                     unit tests, or one of them
#   make integration [T=test_tokens.TokenTest.test_x]   integration tests (root), or some
#   make fuzz [FUZZ_SECONDS=60] [T=frame]   each libFuzzer harness of tests/fuzz/ (clang-14,
#                        ASan+UBSan) for that long, on its seeds in tests/fuzz/<target>/
#   make bench           throughput/latency figures (see tests/bench/)
#   make demo            start a broker on an embedded config, issue/verify/audit a token
#   make install         PREFIX=/usr/local DESTDIR= (and SYSCONFDIR=/etc, UNITDIR, ... below);
#                        make uninstall with the same variables removes it again
# A sanitizer build lives in build/asan (make SAN=1 BUILD=build/asan).

PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
SBINDIR    ?= $(PREFIX)/sbin
LIBDIR     ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
DATADIR    ?= $(PREFIX)/share
MANDIR     ?= $(DATADIR)/man
DOCDIR     ?= $(DATADIR)/doc/brokerd
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
BASHCOMPDIR  ?= $(DATADIR)/bash-completion/completions
# systemd reads units and sysusers.d from /usr/local/lib as well as /usr/lib.
UNITDIR    ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
# The config lives in /etc whatever the prefix: the units name it there.
SYSCONFDIR ?= /etc
DESTDIR    ?=
VERSION    := $(shell sed -n 's/.*BROKERD_VERSION "\(.*\)".*/\1/p' $(wildcard common/version.h brokerd/daemon/version.h) | head -n 1)

BUILD      ?= build
SAN        ?=
PKG_CONFIG ?= pkg-config
PYTHON     ?= /usr/bin/python3
V          ?=
Q          := $(if $(V),,@)

PKGS      := libsodium jansson sqlite3 libsystemd libcrypto libcurl libxml-2.0 libcap
PKG_CFLAGS := $(shell $(PKG_CONFIG) --cflags $(PKGS))
PKG_LIBS   := $(shell $(PKG_CONFIG) --libs $(PKGS))

CC      ?= cc
OPT     ?= -O2 -g
WARN    := -Wall -Wextra -Werror -Wno-unused-parameter -Wshadow -Wformat=2 \
           -Wstrict-prototypes -Wmissing-prototypes -Wvla -Wpointer-arith
HARDEN  := -fstack-protector-strong -fPIE
LDHARDEN := -pie -Wl,-z,relro,-z,now
ifeq ($(SAN),1)
  OPT    := -O1 -g -fno-omit-frame-pointer
  HARDEN += -fsanitize=address,undefined -fno-sanitize-recover=all -DBROKERD_SANITIZER_BUILD
  LDHARDEN += -fsanitize=address,undefined
else
  HARDEN += -D_FORTIFY_SOURCE=2
endif
CPPFLAGS += -D_GNU_SOURCE -Icommon -Iproto -Ibrokerd -Iclient
ALL_CFLAGS := -std=gnu11 $(OPT) $(WARN) $(HARDEN) $(PKG_CFLAGS) $(CFLAGS) -MMD -MP
ALL_LDFLAGS := $(LDHARDEN) $(LDFLAGS)

COMMON_SRCS := $(wildcard common/*.c common/*/*.c)
PROTO_SRCS  := $(wildcard proto/*.c)
DAEMON_SRCS := $(wildcard brokerd/*/*.c)
LIB_SRCS    := client/libbroker.c
CTL_SRCS    := $(filter-out $(LIB_SRCS) client/brokerctl.c,$(wildcard client/*.c))
UNIT_SRCS   := $(wildcard tests/unit/test_*.c)
BENCH_SRCS  := $(wildcard tests/bench/*.c)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))
# libbroker: the client, the protocol and the common code the protocol uses.
LIBBROKER_SRCS := $(LIB_SRCS) $(PROTO_SRCS) common/escape.c
PIC_OBJS := $(patsubst %.c,$(BUILD)/pic/%.o,$(LIBBROKER_SRCS))

UNIT_BINS  := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRCS))
BENCH_BINS := $(patsubst tests/bench/%.c,$(BUILD)/bench/%,$(BENCH_SRCS))

.PHONY: all check check-quick unit integration layering check-asan bench demo deps install \
	uninstall clean \
	format fuzz fuzz-build fuzz-check
all: $(BUILD)/brokerd $(BUILD)/brokerctl $(BUILD)/libbroker.a $(BUILD)/libbroker.so.0

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(if $(Q),@echo "  CC      $<")
	$(Q)$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -c $< -o $@

$(BUILD)/pic/%.o: %.c
	@mkdir -p $(dir $@)
	$(if $(Q),@echo "  CC [pic] $<")
	$(Q)$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -fPIC -fvisibility=hidden -c $< -o $@

# Everything but the two mains, so unit tests and benchmarks link the real code.
$(BUILD)/libcore.a: $(call obj,$(COMMON_SRCS) $(PROTO_SRCS) $(DAEMON_SRCS) $(CTL_SRCS))
	@rm -f $@
	$(Q)ar rcs $@ $^

$(BUILD)/brokerd: $(call obj,brokerd/main.c) $(BUILD)/libcore.a
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(PKG_LIBS) -lpthread

$(BUILD)/libbroker.a: $(call obj,$(LIBBROKER_SRCS))
	@rm -f $@
	$(Q)ar rcs $@ $^

$(BUILD)/libbroker.so.0: $(PIC_OBJS)
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(CC) -shared -Wl,-soname,libbroker.so.0 -Wl,--no-undefined $(filter -fsanitize%,$(LDHARDEN)) \
		-o $@ $^ \
		$(shell $(PKG_CONFIG) --libs jansson) -lpthread

$(BUILD)/brokerctl: $(call obj,client/brokerctl.c) $(BUILD)/libbroker.a $(BUILD)/libcore.a
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(PKG_LIBS) -lpthread

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libcore.a $(BUILD)/libbroker.a
	@mkdir -p $(dir $@)
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(CC) $(CPPFLAGS) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $(filter %.c %.a,$^) $(PKG_LIBS) -lcmocka -lpthread

$(BUILD)/bench/%: tests/bench/%.c $(BUILD)/libbroker.a $(BUILD)/libcore.a
	@mkdir -p $(dir $@)
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(CC) $(CPPFLAGS) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $(filter %.c %.a,$^) $(PKG_LIBS) -lpthread

# T picks one unit test by file name (make unit T=test_escape); a name that is not there is
# an error, not an empty run.
ifneq ($(T),)
ifneq ($(filter unit,$(MAKECMDGOALS)),)
ifeq ($(wildcard tests/unit/$(T).c),)
$(error make unit: no unit test named '$(T)'; the names are those of tests/unit/test_*.c)
endif
endif
endif
UNIT_RUN := $(if $(and $(T),$(filter unit,$(MAKECMDGOALS))),$(BUILD)/tests/$(T),$(UNIT_BINS))

unit: $(UNIT_RUN)
	@set -e; for t in $(abspath $(UNIT_RUN)); do echo "== $$t"; (cd tests/unit && $$t); done

# T: unittest names (module, module.Class or module.Class.test), space-separated.
integration: all
	BROKER_BUILD=$(abspath $(BUILD)) $(PYTHON) tests/integration/run.py $(T)

# Which part of the tree may include which: tests/layering.py holds the table.
layering:
	$(PYTHON) tests/layering.py

check-asan:
	$(MAKE) SAN=1 BUILD=build/asan unit integration

check: all layering
	$(MAKE) unit integration
	$(MAKE) fuzz-check
	$(MAKE) check-asan

check-quick: all layering
	$(MAKE) unit
	$(MAKE) SAN=1 BUILD=build/asan unit

# Fuzzing: one libFuzzer harness per parser, tests/fuzz/<target>.c, with its seed corpus in
# tests/fuzz/<target>/ (and an optional libFuzzer dictionary tests/fuzz/<target>.dict). Adding
# a harness is adding those; nothing here names a target. Everything is built with clang, the
# code under test instrumented for coverage and with ASan+UBSan (every finding aborts), in
# $(BUILD)/fuzz/. A run keeps what it learns in $(BUILD)/fuzz/corpus/<target>/ (the seeds are
# only read) and a crashing input in $(BUILD)/fuzz/crash/; see tests/fuzz/README.md.
FUZZ_CC            ?= clang-14
FUZZ_SECONDS       ?= 60
FUZZ_CHECK_SECONDS ?= 10
FUZZ_DIR     := $(BUILD)/fuzz
FUZZ_ALL     := $(patsubst tests/fuzz/%.c,%,$(wildcard tests/fuzz/*.c))
ifneq ($(T),)
ifneq ($(filter fuzz fuzz-check fuzz-build,$(MAKECMDGOALS)),)
ifeq ($(wildcard tests/fuzz/$(T).c),)
$(error make fuzz: no harness named '$(T)'; the names are those of tests/fuzz/*.c)
endif
endif
endif
FUZZ_TARGETS := $(if $(and $(T),$(filter fuzz fuzz-check fuzz-build,$(MAKECMDGOALS))),$(T),$(FUZZ_ALL))
FUZZ_BINS    := $(addprefix $(FUZZ_DIR)/,$(FUZZ_TARGETS))
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=all
# clang, unlike gcc, also calls a variable unused when only its cleanup attribute uses it: a
# warning here, not a build failure, since the plain build (gcc) is the one that gates it.
FUZZ_CFLAGS  := -std=gnu11 -O1 -g -fno-omit-frame-pointer $(WARN) -Wno-error=unused-variable \
                $(FUZZ_SAN) $(PKG_CFLAGS) $(CFLAGS) -MMD -MP
fuzz_obj = $(patsubst %.c,$(FUZZ_DIR)/obj/%.o,$(1))

$(FUZZ_DIR)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(if $(Q),@echo "  CC [fuzz] $<")
	$(Q)$(FUZZ_CC) $(CPPFLAGS) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

$(FUZZ_DIR)/libcore.a: $(call fuzz_obj,$(COMMON_SRCS) $(PROTO_SRCS) $(DAEMON_SRCS))
	@rm -f $@
	$(Q)ar rcs $@ $^

$(FUZZ_DIR)/%: tests/fuzz/%.c tests/fuzz/fuzz.h $(FUZZ_DIR)/libcore.a
	$(if $(Q),@echo "  LD [fuzz] $@")
	$(Q)$(FUZZ_CC) $(CPPFLAGS) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_DIR)/libcore.a \
		$(PKG_LIBS) -lpthread

fuzz-build: $(FUZZ_BINS)

# One make target per harness, so that -j2 runs two at a time.
FUZZ_RUNS := $(addprefix fuzz-run-,$(FUZZ_TARGETS))
.PHONY: $(FUZZ_RUNS)
$(FUZZ_RUNS): fuzz-run-%: $(FUZZ_DIR)/%
	@tests/fuzz/run.sh $(FUZZ_DIR)/$* tests/fuzz/$* $(FUZZ_DIR) $(FUZZ_SECONDS)

fuzz: $(FUZZ_RUNS)

# What make check runs: every harness briefly, seeds (and regression inputs) first.
fuzz-check:
	$(MAKE) fuzz FUZZ_SECONDS=$(FUZZ_CHECK_SECONDS)

bench: all $(BENCH_BINS)
	BROKER_BUILD=$(abspath $(BUILD)) tests/bench/run

demo: all
	BROKER_BUILD=$(abspath $(BUILD)) tests/demo.sh

# Debian packages for building, testing and the demo (needs root), and the pinned Node
# verifier the integration tests use (tests/integration/node).
deps:
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
		$$(sed 's/#.*//' .ci/packages)
	command -v node >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y \
		--no-install-recommends nodejs npm
	npm ci --prefix tests/integration/node

# Files with @SBINDIR@-style placeholders are filled in as they are installed.
SUBST := sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@BINDIR@|$(BINDIR)|g' \
	-e 's|@SBINDIR@|$(SBINDIR)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' \
	-e 's|@INCLUDEDIR@|$(INCLUDEDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' \
	-e 's|@VERSION@|$(VERSION)|g'
# Installed path (under DESTDIR) <- source, one pair per file filled in with SUBST, mode 0644.
SUBST_FILES := \
	$(UNITDIR)/brokerd.service:units/brokerd.service \
	$(PKGCONFIGDIR)/libbroker.pc:client/libbroker.pc.in \
	$(MANDIR)/man8/brokerd.8:brokerd/brokerd.8 \
	$(MANDIR)/man5/brokerd.json.5:brokerd/brokerd.json.5 \
	$(MANDIR)/man1/brokerctl.1:client/brokerctl.1
# The same, copied as they are.
DATA_FILES := \
	$(UNITDIR)/brokerd.socket:units/brokerd.socket \
	$(UNITDIR)/brokerd-admin.socket:units/brokerd-admin.socket \
	$(SYSUSERSDIR)/brokerd.conf:units/brokerd.sysusers \
	$(DOCDIR)/examples/federation.conf:units/federation.conf \
	$(DOCDIR)/examples/brokerd.json:brokerd/brokerd.json.example \
	$(INCLUDEDIR)/broker.h:client/broker.h \
	$(LIBDIR)/libbroker.a:$(BUILD)/libbroker.a \
	$(BASHCOMPDIR)/brokerctl:client/brokerctl.bash-completion
CONFIG_FILE := $(SYSCONFDIR)/brokerd/brokerd.json
dst = $(firstword $(subst :, ,$(1)))
src = $(lastword $(subst :, ,$(1)))

INSTALL_DIRS := $(sort $(SBINDIR) $(BINDIR) $(LIBDIR) $(SYSCONFDIR)/brokerd \
	$(foreach f,$(SUBST_FILES) $(DATA_FILES),$(patsubst %/,%,$(dir $(call dst,$(f))))))

install: all
	install -d -m 0755 $(addprefix $(DESTDIR),$(INSTALL_DIRS))
	install -m 0755 $(BUILD)/brokerd $(DESTDIR)$(SBINDIR)/brokerd
	install -m 0755 $(BUILD)/brokerctl $(DESTDIR)$(BINDIR)/brokerctl
	install -m 0755 $(BUILD)/libbroker.so.0 $(DESTDIR)$(LIBDIR)/libbroker.so.0
	ln -sfn libbroker.so.0 $(DESTDIR)$(LIBDIR)/libbroker.so
	@set -e; for f in $(DATA_FILES); do \
		echo "install -m 0644 $${f#*:} $(DESTDIR)$${f%%:*}"; \
		install -m 0644 "$${f#*:}" "$(DESTDIR)$${f%%:*}"; \
	done
	@set -e; for f in $(SUBST_FILES); do d="$(DESTDIR)$${f%%:*}"; \
		echo "sed (@SBINDIR@ ...) $${f#*:} > $$d"; \
		$(SUBST) "$${f#*:}" > "$$d.tmp"; chmod 0644 "$$d.tmp"; mv -f "$$d.tmp" "$$d"; \
	done
	@# An example configuration, never over one that is there (edited or not).
	@if [ -e $(DESTDIR)$(CONFIG_FILE) ] || [ -L $(DESTDIR)$(CONFIG_FILE) ]; then \
		echo "  KEEP    $(DESTDIR)$(CONFIG_FILE) (the example is $(DOCDIR)/examples/brokerd.json)"; \
	else \
		echo "install -m 0644 brokerd/brokerd.json.example $(DESTDIR)$(CONFIG_FILE)"; \
		install -m 0644 brokerd/brokerd.json.example $(DESTDIR)$(CONFIG_FILE); \
	fi

# Removes what install put there; the configuration only if it is still the example.
uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/brokerd $(DESTDIR)$(BINDIR)/brokerctl \
		$(DESTDIR)$(LIBDIR)/libbroker.so.0 $(DESTDIR)$(LIBDIR)/libbroker.so \
		$(foreach f,$(SUBST_FILES) $(DATA_FILES),$(DESTDIR)$(call dst,$(f)))
	@if cmp -s brokerd/brokerd.json.example $(DESTDIR)$(CONFIG_FILE); then \
		echo "rm -f $(DESTDIR)$(CONFIG_FILE)"; rm -f $(DESTDIR)$(CONFIG_FILE); \
	elif [ -e $(DESTDIR)$(CONFIG_FILE) ]; then \
		echo "  KEEP    $(DESTDIR)$(CONFIG_FILE) (changed since it was installed)"; \
	fi
	-rmdir $(DESTDIR)$(DOCDIR)/examples $(DESTDIR)$(DOCDIR) $(DESTDIR)$(SYSCONFDIR)/brokerd \
		2>/dev/null

format:
	clang-format -i $(COMMON_SRCS) $(PROTO_SRCS) $(DAEMON_SRCS) brokerd/main.c $(LIB_SRCS) \
		$(CTL_SRCS) client/brokerctl.c $(UNIT_SRCS) $(BENCH_SRCS) \
		$(wildcard */*.h */*/*.h tests/unit/*.h)

clean:
	rm -rf build

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
