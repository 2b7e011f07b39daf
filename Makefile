# livseg build. `make` builds build/livseg and build/liblivseg.a (-O2, warnings are errors in CI
# via WERROR=1); `make asan` builds the same under AddressSanitizer + UBSan into build-asan/;
# `make test` / `make test-asan` run the test suite; `make check` runs what CI runs;
# `make fuzz` builds the libFuzzer harnesses (clang); `make CUDA=1` adds the CUDA backend;
# `make install [PREFIX=/usr/local] [DESTDIR=]` installs the command, its models, the header and the library.

BUILD   ?= build
CC      ?= cc
CXX     ?= c++
OPT     ?= -O2
SAN     ?=
WERROR  ?=
# OpenBLAS's OpenMP build, named explicitly (Debian's alternatives may point elsewhere): inside our own
# OpenMP regions it runs single-threaded instead of oversubscribing the cores.
BLAS_DIR = /usr/lib/x86_64-linux-gnu/openblas-openmp
PKG_INC  = -I/usr/include/nifti -I/usr/include/gdcm-3.0 -I/usr/include/x86_64-linux-gnu/openblas-openmp
CFLAGS   = -std=c11 $(OPT) -g -Wall -Wextra $(WERROR) -fopenmp -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE \
           -Iinclude -Isrc $(PKG_INC) $(SAN)
CXXFLAGS = -std=c++17 $(OPT) -g -Wall -Wextra $(WERROR) -Iinclude -Isrc $(PKG_INC) $(SAN)
LDLIBS   = -lnifti2 -lznz -lz -ldeflate -lgdcmMSFF -lgdcmDSED -lgdcmCommon -lgdcmDICT \
           -L$(BLAS_DIR) -Wl,-rpath,$(BLAS_DIR) -lopenblas -ljansson -lpng -lstdc++ -lm
LDFLAGS  = -fopenmp $(SAN)

CUDA    ?= 0
NVCC    ?= nvcc
CUDA_DIR ?= /usr/local/cuda
# sm_90 (H100/H200) machine code plus compute_90 PTX for later GPUs. Host-side warnings are errors with WERROR.
# --fmad=false: no a*b+c contracted into an FMA, as on the CPU (ISO C mode), so elementwise kernels written
# in the CPU's order give its bits (the parity test's bounds for them are at the float's last bits).
NVCCFLAGS = -O2 -std=c++17 -Iinclude -Isrc -gencode arch=compute_90,code=[sm_90,compute_90] --fmad=false \
            -Xcompiler -Wall,-Wextra $(if $(WERROR),-Werror all-warnings -Xcompiler -Werror)
ifeq ($(CUDA),1)
CFLAGS  += -DLS_WITH_CUDA=1
CU_SRC   = $(wildcard src/cuda/*.cu)
CU_OBJ   = $(CU_SRC:%.cu=$(BUILD)/%.o)
# cuBLAS is not linked: the backend opens it with dlopen when --device cuda starts (src/cuda/backend.cu),
# found through this run path.
LDLIBS  += -L$(CUDA_DIR)/lib64 -Wl,-rpath,$(CUDA_DIR)/lib64 -lcudart -ldl
BENCH_CU = $(wildcard bench/*.cu)
BENCH_CU_BIN = $(BENCH_CU:bench/%.cu=$(BUILD)/bench/%)
endif

LIB_C    = $(wildcard src/*.c)
LIB_CXX  = $(wildcard src/*.cpp)
LIB_OBJ  = $(LIB_C:%.c=$(BUILD)/%.o) $(LIB_CXX:%.cpp=$(BUILD)/%.o) $(CU_OBJ)
TEST_SRC = $(wildcard tests/test_*.c)
TEST_BIN = $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
BENCH_SRC = $(wildcard bench/*.c)
BENCH_BIN = $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%) $(BENCH_CU_BIN)

.PHONY: all asan test test-asan check fuzz fuzz-run install clean
all: $(BUILD)/livseg $(TEST_BIN) $(BENCH_BIN)

# Recreated, not updated: members of deleted sources must not linger in the archive.
$(BUILD)/liblivseg.a: $(LIB_OBJ)
	rm -f $@
	ar rcs $@ $^

$(BUILD)/src/%.o: src/%.c $(wildcard src/*.h) include/livseg.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/src/%.o: src/%.cpp $(wildcard src/*.h) include/livseg.h
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -c $< -o $@

$(BUILD)/src/cuda/%.o: src/cuda/%.cu $(wildcard src/*.h src/cuda/*.cuh) include/livseg.h
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -c $< -o $@

# CUDA benchmarks (bench/*.cu): cuBLAS alone, no library.
$(BUILD)/bench/%: bench/%.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) $< -o $@ -L$(CUDA_DIR)/lib64 -Xlinker -rpath,$(CUDA_DIR)/lib64 -lcublas -lcudart

CLI_SRC  = $(wildcard tools/*.c)
$(BUILD)/livseg: $(CLI_SRC) $(wildcard tools/*.h) $(BUILD)/liblivseg.a
	$(CC) $(CFLAGS) -Itools $(CLI_SRC) $(BUILD)/liblivseg.a $(LDFLAGS) $(LDLIBS) -o $@

$(BUILD)/tests/%: tests/%.c $(wildcard tests/*.h) $(BUILD)/liblivseg.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests $< $(BUILD)/liblivseg.a $(LDFLAGS) $(LDLIBS) -o $@

$(BUILD)/bench/%: bench/%.c bench/common.h $(BUILD)/liblivseg.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $< $(BUILD)/liblivseg.a $(LDFLAGS) $(LDLIBS) -o $@

asan:
	$(MAKE) BUILD=build-asan OPT=-O1 SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"

test: all
	tests/run.sh $(BUILD)

test-asan: asan
	ASAN_OPTIONS=detect_leaks=1 tests/run.sh build-asan

# libFuzzer harnesses: clang, ASan + UBSan, linked against a sanitized library build.
FUZZ_BUILD = build-fuzz
FUZZ_SAN   = -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer
fuzz:
	$(MAKE) BUILD=$(FUZZ_BUILD) CC=clang CXX=clang++ OPT=-O1 SAN="$(FUZZ_SAN)" $(FUZZ_BUILD)/liblivseg.a
	@mkdir -p $(FUZZ_BUILD)/fuzz
	for f in fuzz/fuzz_*.c; do n=$$(basename $$f .c); \
	  clang -std=c11 -O1 -g -fopenmp -D_DEFAULT_SOURCE -Iinclude -Isrc $(PKG_INC) \
	    -fsanitize=fuzzer,address,undefined -c $$f -o $(FUZZ_BUILD)/fuzz/$$n.o && \
	  clang++ -fopenmp -fsanitize=fuzzer,address,undefined $(FUZZ_BUILD)/fuzz/$$n.o $(FUZZ_BUILD)/liblivseg.a \
	    $(LDLIBS) -o $(FUZZ_BUILD)/fuzz/$$n || exit 1; done

FUZZ_SECONDS ?= 60
fuzz-run: fuzz
	fuzz/run.sh $(FUZZ_BUILD)/fuzz $(FUZZ_SECONDS)

# What CI runs: warning-free builds (CPU, sanitizers, CUDA so GPU code never rots; the CUDA parity test runs
# there, skipping without a GPU), the fuzzers for a bounded time, then every test in the normal
# and the sanitizer build with one closing "N passed, N failed" line.
check:
	$(MAKE) WERROR=-Werror all
	$(MAKE) WERROR=-Werror asan
	if command -v $(NVCC) >/dev/null; then $(MAKE) CUDA=1 BUILD=build-cuda WERROR=-Werror all && \
	  build-cuda/tests/test_ops_cuda; \
	else echo "check: $(NVCC) not found, CUDA build skipped"; fi
	$(MAKE) install DESTDIR=$(CURDIR)/build/stage PREFIX=/usr >/dev/null && build/stage/usr/bin/livseg --version >/dev/null
	$(MAKE) fuzz-run
	ASAN_OPTIONS=detect_leaks=1 tests/run.sh build build-asan

# The models go to PREFIX/share/livseg/models/, where an installed `livseg segment` finds its default model
# (from its own place, PREFIX/bin); BUILD=build-cuda installs the CUDA build.
PREFIX ?= /usr/local
install: $(BUILD)/livseg $(BUILD)/liblivseg.a
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/livseg/models $(DESTDIR)$(PREFIX)/include \
	  $(DESTDIR)$(PREFIX)/lib
	install -m 755 $(BUILD)/livseg $(DESTDIR)$(PREFIX)/bin/livseg
	install -m 644 models/*.safetensors models/README.md $(DESTDIR)$(PREFIX)/share/livseg/models/
	install -m 644 include/livseg.h $(DESTDIR)$(PREFIX)/include/livseg.h
	install -m 644 $(BUILD)/liblivseg.a $(DESTDIR)$(PREFIX)/lib/liblivseg.a

clean:
	rm -rf build build-asan build-fuzz build-cuda
