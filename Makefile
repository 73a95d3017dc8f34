# Kiln build. `make` builds build/kiln; `make run` and `make test` first
# install any missing Debian package (scripts/debian-packages.txt).
#
#   make            build/kiln (gcc by default; CC=clang works too)
#   make run        install deps, build, serve on http://127.0.0.1:4000
#   make test       install deps, build, run every suite (plain + ASan/UBSan),
#                   and a short fuzz run
#   make fuzz       run the fuzzers longer (FUZZ_SECONDS, default 300)
#   make bench      wrk against kiln and nginx (bench/README.md)
#   make clean

CC        ?= cc
CLANG     ?= clang
PYTHON    ?= /usr/bin/python3
LLHTTP_SRC = /usr/share/llhttp
LLHTTP_INC = /usr/share/include/llhttp

VERSION_STR := $(shell cat VERSION)$(shell git rev-parse --short HEAD >/dev/null 2>&1 && echo "+$$(git rev-parse --short HEAD)")

PKGS      = libuv openssl jansson libpq sqlite3 hiredis libcurl expat
# libpq, libcurl and SQLite are compiled against but not linked: Kiln loads
# them with dlopen when the configuration needs them (app/src/core/dl.h,
# whose sonames DLOPEN_LIBS reads, for the image and the Lambda zips).
LINK_PKGS = $(filter-out libpq libcurl sqlite3,$(PKGS))
DLOPEN_LIBS := $(shell sed -n 's/^\#define KILN_[A-Z]*_SONAME "\(.*\)"$$/\1/p' app/src/core/dl.h)
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(LINK_PKGS) 2>/dev/null)

WARN      = -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
            -Wno-unused-parameter
CPPFLAGS  = -D_GNU_SOURCE -iquote app/src -I$(LLHTTP_INC) $(PKG_CFLAGS) \
            -DKILN_VERSION='"$(VERSION_STR)"'
CFLAGS   ?= -O2 -g
CFLAGS   += -std=c17 -pthread -fno-strict-aliasing
# GnuTLS's constructor looks up _gnutls_global_init_skip (app/src/core/dl.h):
# the executable must export it.
EXPORTS   = -Wl,--export-dynamic-symbol=_gnutls_global_init_skip
LDLIBS    = $(PKG_LIBS) -pthread $(EXPORTS)
SAN_FLAGS = -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer \
            -fno-sanitize-recover=all

SRC      := $(shell find app/src -name '*.c' ! -name main.c | sort)
LLHTTP   := api http llhttp
UNIT_SRC := $(wildcard app/tests/unit/*.c)
FUZZ_SRC := $(wildcard app/tests/fuzz/*.c)

# Three build flavours share the rules below: plain, asan (clang with
# sanitizers) and fuzz (clang with libFuzzer).
OBJ        = $(SRC:app/src/%.c=build/obj/%.o) $(LLHTTP:%=build/obj/llhttp/%.o) build/obj/gen/migrations.o build/obj/gen/docs.o
ASAN_OBJ   = $(SRC:app/src/%.c=build/asan/obj/%.o) $(LLHTTP:%=build/asan/obj/llhttp/%.o) build/asan/obj/gen/migrations.o build/asan/obj/gen/docs.o
FUZZ_OBJ   = $(SRC:app/src/%.c=build/fuzz/obj/%.o) $(LLHTTP:%=build/fuzz/obj/llhttp/%.o) build/fuzz/obj/gen/migrations.o build/fuzz/obj/gen/docs.o
MIGRATIONS := $(sort $(wildcard app/migrations/postgres/*.sql app/migrations/sqlite/*.sql))
UNIT_BIN   = $(UNIT_SRC:app/tests/unit/%.c=build/tests/%)
UNIT_ASAN  = $(UNIT_SRC:app/tests/unit/%.c=build/asan/tests/%)
FUZZ_BIN   = $(FUZZ_SRC:app/tests/fuzz/%.c=build/fuzz/%)

.PHONY: all deps run test unit unit-asan blackbox blackbox-asan fuzz fuzz-smoke bench clean asan
.DELETE_ON_ERROR:

all: build/kiln

deps:
	@scripts/deps.sh

run: deps
	@$(MAKE) --no-print-directory build/kiln
	build/kiln serve

# Migrations are embedded in the binary (store/migrate.h).
build/gen/migrations.c: scripts/embed-migrations.sh $(MIGRATIONS)
	@mkdir -p $(dir $@)
	scripts/embed-migrations.sh $@

# The OpenAPI document and its HTML page (api/openapi.c).
build/gen/docs.c: scripts/embed-docs.sh app/docs/openapi.json app/docs/docs.html
	@mkdir -p $(dir $@)
	scripts/embed-docs.sh $@

build/obj/gen/%.o: build/gen/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) -c $< -o $@

build/asan/obj/gen/%.o: build/gen/%.c
	@mkdir -p $(dir $@)
	$(CLANG) $(CPPFLAGS) -std=c17 -pthread $(SAN_FLAGS) $(WARN) -c $< -o $@

build/fuzz/obj/gen/%.o: build/gen/%.c
	@mkdir -p $(dir $@)
	$(CLANG) $(CPPFLAGS) -std=c17 -pthread $(FUZZ_FLAGS) $(WARN) -c $< -o $@

# --- plain build ---
build/obj/%.o: app/src/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) -MMD -MP -c $< -o $@

# llhttp is compiled from Debian's sources (node-llhttp); it is not our code,
# so our warning flags do not apply to it.
build/obj/llhttp/%.o: $(LLHTTP_SRC)/%.c
	@mkdir -p $(dir $@)
	$(CC) -I$(LLHTTP_INC) $(CFLAGS) -w -c $< -o $@

build/libkiln.a: $(OBJ)
	@rm -f $@
	ar rcs $@ $^

build/kiln: build/obj/main.o build/libkiln.a
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

build/tests/%: app/tests/unit/%.c build/libkiln.a
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -iquote app/tests/unit $(CFLAGS) $(WARN) -o $@ $< build/libkiln.a $(LDLIBS) -lcmocka

# Test tools (app/tests/tools/*.c): small programs over build/libkiln.a that
# the black-box suite drives (sigv4_tool: test_sigv4_botocore.py).
TOOL_BIN := $(patsubst app/tests/tools/%.c,build/tests/tools/%,$(wildcard app/tests/tools/*.c))
build/tests/tools/%: app/tests/tools/%.c build/libkiln.a
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) -o $@ $< build/libkiln.a $(LDLIBS)
blackbox: $(TOOL_BIN)

# --- ASan + UBSan build (clang) ---
asan: build/asan/kiln $(UNIT_ASAN)

build/asan/obj/%.o: app/src/%.c
	@mkdir -p $(dir $@)
	$(CLANG) $(CPPFLAGS) -std=c17 -pthread $(SAN_FLAGS) $(WARN) -MMD -MP -c $< -o $@

build/asan/obj/llhttp/%.o: $(LLHTTP_SRC)/%.c
	@mkdir -p $(dir $@)
	$(CLANG) -I$(LLHTTP_INC) $(SAN_FLAGS) -w -c $< -o $@

build/asan/libkiln.a: $(ASAN_OBJ)
	@rm -f $@
	ar rcs $@ $^

build/asan/kiln: build/asan/obj/main.o build/asan/libkiln.a
	$(CLANG) $(SAN_FLAGS) -pthread -o $@ $^ $(LDLIBS)

build/asan/tests/%: app/tests/unit/%.c build/asan/libkiln.a
	@mkdir -p $(dir $@)
	$(CLANG) $(CPPFLAGS) -iquote app/tests/unit -std=c17 -pthread $(SAN_FLAGS) $(WARN) -o $@ $< build/asan/libkiln.a $(LDLIBS) -lcmocka

# --- libFuzzer build (clang) ---
FUZZ_FLAGS = -O1 -g -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all

build/fuzz/obj/%.o: app/src/%.c
	@mkdir -p $(dir $@)
	$(CLANG) $(CPPFLAGS) -std=c17 -pthread $(FUZZ_FLAGS) $(WARN) -MMD -MP -c $< -o $@

build/fuzz/obj/llhttp/%.o: $(LLHTTP_SRC)/%.c
	@mkdir -p $(dir $@)
	$(CLANG) -I$(LLHTTP_INC) $(FUZZ_FLAGS) -w -c $< -o $@

build/fuzz/libkiln.a: $(FUZZ_OBJ)
	@rm -f $@
	ar rcs $@ $^

build/fuzz/%: app/tests/fuzz/%.c build/fuzz/libkiln.a
	$(CLANG) $(CPPFLAGS) -std=c17 -pthread -O1 -g -fsanitize=fuzzer,address,undefined \
		-fno-sanitize-recover=all $(WARN) -o $@ $< build/fuzz/libkiln.a $(LDLIBS)

# --- tests ---
# Every binary runs even after a failure, so one run shows all of them.
unit: $(UNIT_BIN)
	@rc=0; for t in $^; do echo "== $$t"; $$t || rc=1; done; exit $$rc

unit-asan: $(UNIT_ASAN)
	@rc=0; for t in $^; do echo "== $$t"; $$t || rc=1; done; exit $$rc

blackbox: build/kiln
	KILN_BIN=build/kiln $(PYTHON) -m pytest -q app/tests/http

blackbox-asan: build/asan/kiln
	KILN_BIN=build/asan/kiln KILN_SANITIZED=1 $(PYTHON) -m pytest -q app/tests/http

FUZZ_SECONDS ?= 300
FUZZ_SMOKE_SECONDS ?= 30
fuzz: deps $(FUZZ_BIN)
	@scripts/fuzz.sh $(FUZZ_SECONDS) $(FUZZ_BIN)

fuzz-smoke: $(FUZZ_BIN)
	@scripts/fuzz.sh $(FUZZ_SMOKE_SECONDS) $(FUZZ_BIN)

test: deps
	@$(MAKE) --no-print-directory all asan $(UNIT_BIN) $(FUZZ_BIN)
	@scripts/test.sh

bench: deps build/kiln
	bench/run.sh

# --- container image (Dockerfile, scripts/image.sh) ---
# By hand, as root; not part of `make test` (which checks the Dockerfile
# statically: app/tests/http/test_image.py). Installs buildah, debootstrap
# and qemu-user-static if missing, debootstraps a Debian base per
# architecture once (cached in build/image/), builds
# localhost/kiln:<VERSION>-<commit> (amd64) and ...-arm64 (under qemu) with
# buildah, smoke-tests them (amd64: `kiln version`, a served HTTPS request,
# SIGTERM, nothing written outside /var/lib/kiln and /tmp, PORT=443; arm64:
# `kiln version`, `kiln migrate`) and prints their sizes against the 30 MB
# goal. Cold: the arm64 base and build take most of it; warm: seconds.
# The sonames build/kiln may dlopen, for the Dockerfile and scripts/image.sh.
.PHONY: print-dlopen-libs
print-dlopen-libs:
	@echo $(DLOPEN_LIBS)

.PHONY: image image-smoke
image:
	scripts/image.sh base build smoke

image-smoke:
	scripts/image.sh smoke

clean:
	rm -rf build

# --- Lambda: the secret rotation functions (infra/lambdas/README.md) ---------
#   make lambdas                    build/lambdas/<arch>/rotate-<kind>.zip for this
#                                   machine's architecture, copied to build/lambdas/
#   LAMBDA_ARCH=arm64 make lambdas  the same cross-built for Graviton (as root the
#                                   first time: scripts/lambda-deps.sh fetches the
#                                   cross compiler and an arm64 sysroot)
# One binary (kiln-rotate) in three zips; each zip's bootstrap picks its kind.
LAMBDA_NATIVE  := $(shell uname -m | sed 's/^aarch64$$/arm64/')
LAMBDA_ARCH    ?= $(LAMBDA_NATIVE)
LAMBDA_KINDS    = secret-key-base db-user valkey-user
LAMBDA_SRC     := $(sort $(wildcard infra/lambdas/src/*.c))
LAMBDA_DIR      = build/lambdas/$(LAMBDA_ARCH)
LAMBDA_ZIPS     = $(LAMBDA_KINDS:%=$(LAMBDA_DIR)/rotate-%.zip)
LAMBDA_TRIPLET  = $(if $(filter arm64,$(LAMBDA_ARCH)),aarch64,x86_64)-linux-gnu
LAMBDA_OBJ      = $(LAMBDA_SRC:infra/lambdas/src/%.c=$(LAMBDA_DIR)/obj/%.o)
LAMBDA_LDFLAGS  = -Wl,--as-needed
# The rotation functions talk to PostgreSQL and AWS, never to SQLite.
LAMBDA_DLOPEN_LIBS = $(filter-out libsqlite3.%,$(DLOPEN_LIBS))
ifeq ($(LAMBDA_ARCH),$(LAMBDA_NATIVE))
# Native: the objects of build/libkiln.a as they are.
LAMBDA_SYSROOT  =
LAMBDA_CC       = $(CC)
LAMBDA_STRIP    = strip
LAMBDA_CPPFLAGS = $(CPPFLAGS)
LAMBDA_LIBKILN  = build/libkiln.a
LAMBDA_LIBS     = $(LDLIBS)
LAMBDA_DEPS     =
else
# Cross: Debian's cross gcc over a sysroot of Debian's :<arch> packages.
LAMBDA_SYSROOT  = build/lambdas/sysroot-$(LAMBDA_ARCH)
LAMBDA_CC       = $(LAMBDA_TRIPLET)-gcc --sysroot=$(LAMBDA_SYSROOT)
LAMBDA_STRIP    = $(LAMBDA_TRIPLET)-strip
LAMBDA_PKG      = PKG_CONFIG_SYSROOT_DIR=$(LAMBDA_SYSROOT) \
                  PKG_CONFIG_LIBDIR=$(LAMBDA_SYSROOT)/usr/lib/$(LAMBDA_TRIPLET)/pkgconfig:$(LAMBDA_SYSROOT)/usr/share/pkgconfig \
                  pkg-config
LAMBDA_CPPFLAGS = -D_GNU_SOURCE -iquote app/src -I$(LLHTTP_INC) $$($(LAMBDA_PKG) --cflags $(PKGS)) \
                  -DKILN_VERSION='"$(VERSION_STR)"'
LAMBDA_LIBKILN  = $(LAMBDA_DIR)/libkiln.a
LAMBDA_LIBS     = $$($(LAMBDA_PKG) --libs $(LINK_PKGS)) -pthread $(EXPORTS) \
                  -Wl,-rpath-link,$(LAMBDA_SYSROOT)/usr/lib/$(LAMBDA_TRIPLET):$(LAMBDA_SYSROOT)/lib/$(LAMBDA_TRIPLET)
LAMBDA_DEPS     = $(LAMBDA_SYSROOT)/.kiln-sysroot
LAMBDA_LIBOBJ   = $(SRC:app/src/%.c=$(LAMBDA_DIR)/obj/lib/%.o) $(LLHTTP:%=$(LAMBDA_DIR)/obj/llhttp/%.o) \
                  $(LAMBDA_DIR)/obj/gen/migrations.o $(LAMBDA_DIR)/obj/gen/docs.o

$(LAMBDA_SYSROOT)/.kiln-sysroot: scripts/lambda-deps.sh
	scripts/lambda-deps.sh $(LAMBDA_ARCH) $(LAMBDA_SYSROOT)

$(LAMBDA_DIR)/obj/lib/%.o: app/src/%.c | $(LAMBDA_DEPS)
	@mkdir -p $(dir $@)
	$(LAMBDA_CC) $(LAMBDA_CPPFLAGS) $(CFLAGS) $(WARN) -MMD -MP -c $< -o $@

$(LAMBDA_DIR)/obj/llhttp/%.o: $(LLHTTP_SRC)/%.c | $(LAMBDA_DEPS)
	@mkdir -p $(dir $@)
	$(LAMBDA_CC) -I$(LLHTTP_INC) $(CFLAGS) -w -c $< -o $@

$(LAMBDA_DIR)/obj/gen/%.o: build/gen/%.c | $(LAMBDA_DEPS)
	@mkdir -p $(dir $@)
	$(LAMBDA_CC) $(LAMBDA_CPPFLAGS) $(CFLAGS) $(WARN) -c $< -o $@

$(LAMBDA_DIR)/libkiln.a: $(LAMBDA_LIBOBJ)
	@rm -f $@
	$(LAMBDA_TRIPLET)-ar rcs $@ $^
endif

$(LAMBDA_DIR)/obj/%.o: infra/lambdas/src/%.c | $(LAMBDA_DEPS)
	@mkdir -p $(dir $@)
	$(LAMBDA_CC) $(LAMBDA_CPPFLAGS) -iquote infra/lambdas/src $(CFLAGS) $(WARN) -MMD -MP -c $< -o $@

$(LAMBDA_DIR)/kiln-rotate: $(LAMBDA_OBJ) $(LAMBDA_LIBKILN)
	$(LAMBDA_CC) $(CFLAGS) $(LAMBDA_LDFLAGS) -o $@ $(LAMBDA_OBJ) $(LAMBDA_LIBKILN) $(LAMBDA_LIBS)

$(LAMBDA_DIR)/rotate-%.zip: $(LAMBDA_DIR)/kiln-rotate infra/lambdas/pack.py
	$(PYTHON) infra/lambdas/pack.py --binary $< --kind $* --triplet $(LAMBDA_TRIPLET) \
		$(if $(LAMBDA_SYSROOT),--sysroot $(LAMBDA_SYSROOT)) --dlopen "$(LAMBDA_DLOPEN_LIBS)" \
		--strip $(LAMBDA_STRIP) --out $@

.PHONY: lambdas lambda-zips lambdas-native
lambda-zips: $(LAMBDA_ZIPS)

lambdas: lambda-zips
	cp $(LAMBDA_ZIPS) build/lambdas/

# The black-box suite runs the native zips (app/tests/http/test_rotation.py).
lambdas-native:
	@$(MAKE) --no-print-directory LAMBDA_ARCH=$(LAMBDA_NATIVE) lambda-zips
blackbox: lambdas-native

-include $(shell find build -name '*.d' 2>/dev/null)

# --- infra-check: the Terraform policy suite (infra/README.md) --------------
#   make infra-check   parse infra/ with @cdktf/hcl2json (npm) and prove its
#                      policy with pytest (infra/tests): one test per
#                      property, plus mutation tests; seconds, no Terraform
#                      binary or AWS account needed
.PHONY: infra-check
infra-check:
	@scripts/infra-check.sh
