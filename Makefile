# Switchboard build. `make` builds everything into bin/; `make run`,
# `make stop`, `make test` drive the local stack (deploy/dev/stack.sh).
# Every .c under a component folder is part of that component, so adding a
# module (sm/mod_*.c) needs no change here.

CC      ?= cc
PKGS    := libzmq libev expat gnutls hiredis libpq libidn nettle libmicrohttpd libjwt-gnutls ldap
PKG_CFLAGS := $(shell pkg-config --cflags $(filter-out libev,$(PKGS)) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(filter-out libev,$(PKGS)) 2>/dev/null) -lev -lm
CFLAGS  ?= -O2 -g
override CFLAGS += -std=gnu11 -Wall -Wextra -Werror -Wno-unused-parameter -fno-strict-aliasing \
           -I. -Icommon -Iauth $(PKG_CFLAGS)
# -pthread: common/curve.c runs the ZAP handler in a thread of its own.
LDLIBS  := $(PKG_LIBS) -pthread

BUILD   ?= build
BIN     ?= bin

COMMON_SRC := $(wildcard common/*.c)
AUTH_SRC   := $(wildcard auth/*.c)
ROUTER_SRC := $(wildcard router/*.c)
# c2s/ builds two programs from one session core: sb-c2s (main.c, TCP) and
# sb-bosh (web_*.c: HTTP, BOSH, WebSocket, pre-bind).
C2S_ALL    := $(wildcard c2s/*.c)
WEB_SRC    := $(wildcard c2s/web_*.c)
C2S_CORE   := $(filter-out c2s/main.c $(WEB_SRC),$(C2S_ALL))
C2S_SRC    := $(C2S_CORE) c2s/main.c
BOSH_SRC   := $(C2S_CORE) $(WEB_SRC)
WEB_LIBS   := -lhttp_parser -lwslay
SM_SRC     := $(wildcard sm/*.c)
S2S_SRC    := $(wildcard s2s/*.c)
MUC_SRC    := $(wildcard muc/*.c)
SBCTL_SRC  := $(wildcard sbctl/*.c)
UNIT_SRC   := $(wildcard tests/unit/test_*.c)

obj = $(patsubst %.c,$(BUILD)/%.o,$(1))

LIBCOMMON := $(BUILD)/libsbcommon.a
LIBAUTH   := $(BUILD)/libsbauth.a
LIBS_OWN  := $(LIBAUTH) $(LIBCOMMON)

PROGS := $(BIN)/sb-router $(BIN)/sb-c2s $(BIN)/sb-bosh $(BIN)/sb-sm $(BIN)/sb-s2s $(BIN)/sb-muc $(BIN)/sbctl
UNITS := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))

.PHONY: all run stop test unit unit-san integration bench clean status fuzz fuzz-build fuzz-regress
all: $(PROGS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(LIBCOMMON): $(call obj,$(COMMON_SRC))
	@rm -f $@; ar rcs $@ $^
$(LIBAUTH): $(call obj,$(AUTH_SRC))
	@rm -f $@; ar rcs $@ $^

$(BIN)/sb-router: $(call obj,$(ROUTER_SRC)) $(LIBS_OWN)
	@mkdir -p $(BIN); $(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)
$(BIN)/sb-c2s: $(call obj,$(C2S_SRC)) $(LIBS_OWN)
	@mkdir -p $(BIN); $(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)
$(BIN)/sb-bosh: $(call obj,$(BOSH_SRC)) $(LIBS_OWN)
	@mkdir -p $(BIN); $(CC) $(CFLAGS) -o $@ $^ $(LDLIBS) $(WEB_LIBS)
$(BIN)/sb-sm: $(call obj,$(SM_SRC)) $(LIBS_OWN)
	@mkdir -p $(BIN); $(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)
$(BIN)/sb-s2s: $(call obj,$(S2S_SRC)) $(LIBS_OWN)
	@mkdir -p $(BIN); $(CC) $(CFLAGS) -o $@ $^ $(LDLIBS) -lcares
$(BIN)/sb-muc: $(call obj,$(MUC_SRC)) $(LIBS_OWN)
	@mkdir -p $(BIN); $(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)
# sbctl metrics reads the HTTP answer with http_parser.
$(BIN)/sbctl: $(call obj,$(SBCTL_SRC)) $(LIBS_OWN)
	@mkdir -p $(BIN); $(CC) $(CFLAGS) -o $@ $^ $(LDLIBS) -lhttp_parser

# -MMD: a test that #includes component sources (test_sm_core.c) is rebuilt
# when they change.
$(BUILD)/tests/%: tests/unit/%.c $(LIBS_OWN)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -MF $@.d -o $@ $< $(LIBS_OWN) $(LDLIBS) $(WEB_LIBS) -lcmocka

# Unit tests, plain and under AddressSanitizer + UndefinedBehaviorSanitizer.
unit: $(UNITS)
	@set -e; for t in $(UNITS); do echo "== $$t"; $$t; done

unit-san:
	$(MAKE) BUILD=build/san BIN=build/san/bin \
	  CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" unit

# Fuzz targets (tests/fuzz/, libFuzzer): every library object and the pure
# parts of c2s/s2s rebuilt with clang under ASan + UBSan into build/fuzz.
# `make fuzz` runs each target FUZZ_TIME seconds or, when FUZZ_RUNS is set,
# until it has made that many executions (whichever comes first;
# FUZZ_TARGETS picks some);
# `make fuzz-regress` (part of `make test`) runs each over its corpus and a
# few seconds more. Both under nice -n 19: the machines are shared.
FUZZ_CC    ?= clang
FUZZ_TIME  ?= 60
FUZZ_RUNS  ?=
FUZZ_REGRESS_TIME ?= 3
FUZZ_CFLAGS := -O1 -g -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer \
               -fno-sanitize-recover=undefined
FUZZ_SRC   := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_NAMES := $(patsubst tests/fuzz/fuzz_%.c,%,$(FUZZ_SRC))
FUZZ_TARGETS ?= $(FUZZ_NAMES)
FUZZ_EXTRA := $(call obj,c2s/scan.c c2s/web_parse.c c2s/sasl2_parse.c s2s/pure.c)
FUZZ_BINS  := $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz/%,$(FUZZ_SRC))

$(BUILD)/fuzz/%: tests/fuzz/%.c tests/fuzz/fuzz.h $(FUZZ_EXTRA) $(LIBS_OWN)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fsanitize=fuzzer -MMD -MP -MF $@.d -o $@ $< $(FUZZ_EXTRA) $(LIBS_OWN) \
	  $(LDLIBS) $(WEB_LIBS)

fuzz-build:
	@$(MAKE) --no-print-directory BUILD=build/fuzz BIN=build/fuzz/bin CC=$(FUZZ_CC) \
	  CFLAGS="$(FUZZ_CFLAGS)" $(patsubst tests/fuzz/%.c,build/fuzz/fuzz/%,$(FUZZ_SRC))

fuzz: fuzz-build
	@FUZZ_RUNS=$(FUZZ_RUNS) tests/fuzz/run.sh $(FUZZ_TIME) $(FUZZ_TARGETS)

fuzz-regress: fuzz-build
	@tests/fuzz/run.sh --regress $(FUZZ_REGRESS_TIME) $(FUZZ_NAMES)

# The package check runs before the build so a fresh machine gets the exact
# apt-get line instead of a compiler error.
run:
	@deploy/dev/stack.sh deps
	@$(MAKE) --no-print-directory all
	@deploy/dev/stack.sh run
stop:
	@deploy/dev/stack.sh stop
status:
	@deploy/dev/stack.sh status

# make test: unit tests (plain + sanitizers), the fuzz corpora, then the integration suite
# against a private stack on its own ports (so it can run beside `make run`).
test:
	@deploy/dev/stack.sh deps
	@tests/browser/setup.sh
	@$(MAKE) --no-print-directory all unit unit-san fuzz-regress $(BUILD)/bench/sbbench
	@deploy/dev/stack.sh test

# make bench: the load generator (tests/bench/, needs only libev, GnuTLS,
# Nettle) and the scenarios against a private `bench` stack; PEER=prosody or
# PEER=jabberd2 runs the same scenarios against that server too.
BENCH_SRC := $(wildcard tests/bench/*.c)
$(BUILD)/bench/sbbench: $(BENCH_SRC) tests/bench/sbbench.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $(BENCH_SRC) -lev -lgnutls -lnettle -lm

bench:
	@deploy/dev/stack.sh deps
	@$(MAKE) --no-print-directory all $(BUILD)/bench/sbbench
	@PEER="$(PEER)" GEN="$(GEN)" /usr/bin/python3 tests/bench/bench.py

clean:
	rm -rf build bin

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
