# ncmi build. `make` builds build/ncmi, build/libncmi.a and the test binary.
# `make demo` and `make test` first install missing Debian packages (./setup).
#   make SANITIZE=1 ...   AddressSanitizer + UBSan build in build-san/ (CPU only)
#   make CUDA=0 ...       CPU-only even when nvcc is present
#   make NO_SETUP=1 test  skip the package check
.DEFAULT_GOAL := all
SHELL := /bin/bash

CC ?= gcc
ifeq ($(CC),cc)
CC := gcc
endif
PKG_CONFIG ?= pkg-config

ifeq ($(SANITIZE),1)
BUILD ?= build-san
CUDA := 0
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
# Run-time options of the sanitized tests (docs/hardening.md): every report ends
# the process with exit code 23 (test binary and the ncmi children, which the
# tests' test_run also scans for reports), leaks are reports, and the
# suppressions name only third-party internals. NCMI_SANITIZE=1 (tests/test.h
# test_sanitized) runs the four long training tests with fewer epochs; they
# say so in their output and leave their accuracy floors to make test.
SAN_SUPP := $(CURDIR)/tests/sanitizers
SAN_ENV := ASAN_OPTIONS=$${ASAN_OPTIONS:-exitcode=23:halt_on_error=1:detect_leaks=1:detect_stack_use_after_return=0} \
  UBSAN_OPTIONS=$${UBSAN_OPTIONS:-exitcode=23:halt_on_error=1:print_stacktrace=1:suppressions=$(SAN_SUPP)/ubsan.supp} \
  LSAN_OPTIONS=$${LSAN_OPTIONS:-exitcode=23:suppressions=$(SAN_SUPP)/lsan.supp:print_suppressions=0} \
  NCMI_SANITIZE=1
else
BUILD ?= build
SANFLAGS :=
SAN_ENV :=
endif

# ---- required libraries (pkg-config) ----
REQ_PKGS := openblas yaml-0.1 jansson zlib
PKG_CFLAGS := $(shell $(PKG_CONFIG) --cflags $(REQ_PKGS) 2>/dev/null)
PKG_LIBS := $(shell $(PKG_CONFIG) --libs $(REQ_PKGS) 2>/dev/null)

# ---- optional features, detected ----
have_pkg = $(shell $(PKG_CONFIG) --exists $(1) 2>/dev/null && echo 1 || echo 0)
HAVE_OPENSLIDE := $(call have_pkg,openslide)
HAVE_VIPS := $(call have_pkg,vips)
HAVE_HDF5 := $(shell ($(PKG_CONFIG) --exists hdf5 || test -f /usr/include/hdf5/serial/hdf5.h) 2>/dev/null && echo 1 || echo 0)
ifeq ($(HAVE_HDF5),1)
# Debian's serial HDF5 may lack a pkg-config file: headers in /usr/include/hdf5/serial, -lhdf5_serial
HDF5_CFLAGS := $(shell $(PKG_CONFIG) --cflags hdf5 2>/dev/null || echo -I/usr/include/hdf5/serial)
HDF5_LIBS := $(shell $(PKG_CONFIG) --libs hdf5 2>/dev/null || echo -lhdf5_serial)
endif

CUDA_HOME ?= /usr/local/cuda
NVCC ?= $(shell command -v nvcc 2>/dev/null || (test -x $(CUDA_HOME)/bin/nvcc && echo $(CUDA_HOME)/bin/nvcc))
ifeq ($(CUDA),0)
NVCC :=
endif
HAVE_CUDA := $(if $(NVCC),1,0)
ifeq ($(HAVE_CUDA),1)
HAVE_CUDNN := $(shell test -f $(CUDA_HOME)/include/cudnn.h -o -f /usr/include/cudnn.h && echo 1 || echo 0)
HAVE_NCCL := $(shell test -f $(CUDA_HOME)/include/nccl.h -o -f /usr/include/nccl.h && echo 1 || echo 0)
else
HAVE_CUDNN := 0
HAVE_NCCL := 0
endif
HAVE_MPI := $(shell command -v mpicc >/dev/null 2>&1 && echo 1 || echo 0)

CFLAGS_BASE := -std=c11 -D_GNU_SOURCE -O2 -fvect-cost-model=dynamic -fno-math-errno -g -fopenmp -Wall -Wextra -Werror -MMD -MP
# OpenSlide and libvips (tiler/, previews, synthetic slides) when detected
SLIDE_PKGS := $(if $(filter 1,$(HAVE_OPENSLIDE)),openslide) $(if $(filter 1,$(HAVE_VIPS)),vips)
SLIDE_CFLAGS := $(if $(SLIDE_PKGS),$(shell $(PKG_CONFIG) --cflags $(SLIDE_PKGS)))
SLIDE_LIBS := $(if $(SLIDE_PKGS),$(shell $(PKG_CONFIG) --libs $(SLIDE_PKGS)))

CFLAGS_ALL = $(CFLAGS_BASE) $(SANFLAGS) $(PKG_CFLAGS) $(HDF5_CFLAGS) $(SLIDE_CFLAGS) $(FEATURE_DEFS) $(CFLAGS)
LDLIBS_ALL = $(PKG_LIBS) $(HDF5_LIBS) $(SLIDE_LIBS) $(CUDA_LIBS) -lm -fopenmp $(SANFLAGS) $(LDLIBS)

FEATURE_DEFS := -DNCMI_HAVE_CUDA=$(HAVE_CUDA) -DNCMI_HAVE_CUDNN=$(HAVE_CUDNN) \
  -DNCMI_HAVE_NCCL=$(HAVE_NCCL) -DNCMI_HAVE_MPI=$(HAVE_MPI) \
  -DNCMI_HAVE_OPENSLIDE=$(HAVE_OPENSLIDE) -DNCMI_HAVE_VIPS=$(HAVE_VIPS) -DNCMI_HAVE_HDF5=$(HAVE_HDF5)

LIB_DIRS := nn train eval mil natural tiler features
LIB_SRC := $(foreach d,$(LIB_DIRS),$(wildcard $(d)/*.c)) $(filter-out cli/main.c,$(wildcard cli/*.c))
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o)
CU_SRC := $(if $(NVCC),$(wildcard nn/cuda/*.cu),)
CU_OBJ := $(CU_SRC:%.cu=$(BUILD)/%.cu.o)
ifneq ($(NVCC),)
# sm_90 (H100/H200) machine code plus compute_90 PTX for newer GPUs; NCMI_CUDA_ARCH=sm_80 etc.
NCMI_CUDA_ARCH ?= 90
NVCCFLAGS ?= -O2 -std=c++17 -Xcompiler -Wall,-Werror -gencode arch=compute_$(NCMI_CUDA_ARCH),code=[sm_$(NCMI_CUDA_ARCH),compute_$(NCMI_CUDA_ARCH)]
CUDA_LIBS := -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcudart -lcublas -lcublasLt -lstdc++
ifeq ($(HAVE_CUDNN),1)
CUDA_LIBS += -lcudnn
endif
ifeq ($(HAVE_NCCL),1)
CUDA_LIBS += -lnccl
endif
endif
TEST_SRC := $(wildcard tests/*.c) tests/fuzz/fuzz_targets.c
TEST_OBJ := $(TEST_SRC:%.c=$(BUILD)/%.o)
# GPU tests (make test-gpu): tests/gpu/*.c with the runner, the helpers and the
# files that hold GRAD_TEST cases (each is also run on the GPU). Linked
# --as-needed so the binary carries no slide/image libraries to a GPU machine.
GPU_TEST_SRC := $(wildcard tests/gpu/*.c) tests/main.c tests/gradcheck.c tests/golden_io.c tests/test_golden.c tests/dist_spawn.c tests/mil_synth.c \
  $(shell grep -l GRAD_TEST tests/*.c 2>/dev/null)
GPU_TEST_OBJ := $(GPU_TEST_SRC:%.c=$(BUILD)/%.o)
BENCH_SRC := $(wildcard bench/*.c)

GIT_DESCRIBE := $(shell git describe --always --dirty --tags 2>/dev/null || echo unknown)

# with nvcc, the GPU test binary is built too (CI compiles and links every .cu file)
all: buildinfo $(BUILD)/ncmi $(BUILD)/libncmi.a $(BUILD)/test_ncmi $(if $(NVCC),$(BUILD)/test_gpu)

ok = $(if $(filter 1,$(1)),✓,✗)
# (make features is the cohort stage, below)
buildinfo:
	@echo "ncmi build ($(BUILD)): CPU ✓  OpenBLAS ✓  OpenMP ✓  libyaml ✓  jansson ✓"
	@echo "  CUDA $(call ok,$(HAVE_CUDA))  cuDNN $(call ok,$(HAVE_CUDNN))  NCCL $(call ok,$(HAVE_NCCL))  MPI $(call ok,$(HAVE_MPI))  OpenSlide $(call ok,$(HAVE_OPENSLIDE))  libvips $(call ok,$(HAVE_VIPS))  HDF5 $(call ok,$(HAVE_HDF5))"
	@$(PKG_CONFIG) --exists $(REQ_PKGS) || { echo "missing libraries: run ./setup (pkg-config $(REQ_PKGS))"; exit 2; }

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC    $<"
	@$(CC) $(CFLAGS_ALL) -c $< -o $@

$(BUILD)/%.cu.o: %.cu
	@mkdir -p $(dir $@)
	@echo "  NVCC  $<"
	@$(NVCC) $(NVCCFLAGS) $(FEATURE_DEFS) -c $< -o $@

# version string is baked into cli/version.o at every build
$(BUILD)/cli/version.o: FORCE
$(BUILD)/cli/version.o: CFLAGS += -DNCMI_GIT_DESCRIBE='"$(GIT_DESCRIBE)"'
FORCE:

# the fused MIL ops' branch-free selects (relu mask, vectorised tanh/exp) only
# vectorise without trapping-math (no FP exception flags are read anywhere)
$(BUILD)/nn/ops_fused.o: CFLAGS += -fno-trapping-math

$(BUILD)/libncmi.a: $(LIB_OBJ) $(CU_OBJ)
	@rm -f $@
	@echo "  AR    $@"
	@ar rcs $@ $^

$(BUILD)/ncmi: $(BUILD)/cli/main.o $(BUILD)/libncmi.a
	@echo "  LD    $@"
	@$(CC) $(SANFLAGS) -o $@ $^ $(LDLIBS_ALL)

$(BUILD)/test_ncmi: $(TEST_OBJ) $(BUILD)/libncmi.a
	@echo "  LD    $@"
	@$(CC) $(SANFLAGS) -o $@ $^ $(LDLIBS_ALL)

$(BUILD)/test_gpu: $(GPU_TEST_OBJ) $(BUILD)/libncmi.a
	@echo "  LD    $@"
	@$(CC) $(SANFLAGS) -Wl,--as-needed -o $@ $^ $(LDLIBS_ALL)

$(BUILD)/tools/%: tools/%.c $(BUILD)/libncmi.a
	@mkdir -p $(dir $@)
	@echo "  LD    $@"
	@$(CC) $(CFLAGS_ALL) -o $@ $^ $(LDLIBS_ALL)

$(BUILD)/bench_%: bench/%.c $(BUILD)/libncmi.a
	@mkdir -p $(dir $@)
	@echo "  LD    $@"
	@$(CC) $(CFLAGS_ALL) -Wl,--as-needed -o $@ $^ $(LDLIBS_ALL)

# ---- the two README commands ----
setup:
ifneq ($(NO_SETUP),1)
	@./setup
endif

demo: setup
	@$(MAKE) --no-print-directory all $(BUILD)/tools/make_slides
	@bash tools/demo.sh $(BUILD)

test: setup
	@$(MAKE) --no-print-directory all $(BUILD)/tools/make_slides
	@$(SAN_ENV) NCMI_BIN=$(BUILD)/ncmi OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(BUILD)/test_ncmi $(T)

# the long suite: tests named long_* (scale, repeated fault injection), which the
# default suite leaves out; T=substring narrows it as for make test
test-long: setup
	@$(MAKE) --no-print-directory all $(BUILD)/tools/make_slides
	@$(SAN_ENV) NCMI_TEST_LONG=1 NCMI_BIN=$(BUILD)/ncmi OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(BUILD)/test_ncmi $(if $(T),$(T),long_)

# GPU tests: every op on CPU and GPU compared, the golden tests on the GPU, a
# conv net trained on both devices (needs a GPU; without one each test skips
# with the reason). GPU_TEST_FILTER narrows it (a test name or file substring).
GPU_TEST_FILTER ?= tests/gpu/
gpu-build: setup
	@$(MAKE) --no-print-directory all $(BUILD)/test_gpu $(BUILD)/bench_gpu_ops $(BUILD)/bench_mil_step

test-gpu: gpu-build
	@NCMI_BIN=$(BUILD)/ncmi $(BUILD)/test_gpu $(GPU_TEST_FILTER)

# conv2d / linear forward+backward at ResNet-50 and ABMIL shapes vs PyTorch on the same GPU
# (bench/run_all.sh gpu: also bench-resnet/-features/-mil on cuda; report bench/RESULTS-gpu.md)
bench-gpu: gpu-build
	@$(MAKE) --no-print-directory $(BUILD)/bench_mil_step
	@bash bench/run_all.sh $(BUILD) gpu

# regenerate the PyTorch golden files (needs python3-torch)
# (the generators: golden_*.py and *_reference.py except clam_reference.py, a tool
# the tests call with arguments; mil_ref_*.py and common.py are modules they import)
GOLDEN_GEN := $(sort $(wildcard tests/reference/golden_*.py) $(filter-out %/clam_reference.py,$(wildcard tests/reference/*_reference.py)))
golden:
	@for s in $(GOLDEN_GEN); do echo "/usr/bin/python3 $$s"; /usr/bin/python3 $$s || exit 1; done

bench-ops: setup
	@$(MAKE) --no-print-directory all $(BUILD)/bench_ops
	@bash bench/ops.sh $(BUILD)

# ncmi features vs openslide-python + torchvision on the same patches and weights
# (NCMI_BENCH_FEAT_DEVICE=cuda on a GPU machine)
bench-features: setup
	@$(MAKE) --no-print-directory all $(BUILD)/tools/make_slides
	@bash bench/features.sh $(BUILD)

# ResNet-18 (CIFAR recipe) training images/s vs torchvision on the same device (NCMI_BENCH_RN_DEVICE=cuda)
bench-resnet: setup
	@$(MAKE) --no-print-directory all
	@bash bench/resnet_train.sh $(BUILD)

# ncmi tile vs the Python CLAM reference on generated slides (cached in bench-data/)
bench-tile: setup
	@$(MAKE) --no-print-directory all $(BUILD)/tools/make_slides
	@bash bench/tile.sh $(BUILD)

# one training step with the NCMI head vs the linear + CE head, same encoder and batch
bench-ncmi: setup
	@$(MAKE) --no-print-directory all $(BUILD)/bench_ncmi_overhead
	@OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BUILD)/bench_ncmi_overhead

# one training step per bag of each MIL head vs the same heads in PyTorch (bags/s, peak RSS)
# (every mil/ object but the dispatcher is linked, so a head that exists is found; missing
# heads are skipped). make bench-mil MIL_HEADS=abmil,aem MIL_SIZES=500,4000
# MIL_DEVICE=cuda: both on the GPU (with peak device memory); ROUNDS=n as bench/mil_step.sh
MIL_HEADS ?= abmil,aem,transmil,asmil
MIL_SIZES ?= 500,4000,16000
MIL_DEVICE ?= cpu
MIL_BENCH_OBJ = $(filter-out $(BUILD)/mil/heads.o,$(patsubst %.c,$(BUILD)/%.o,$(wildcard mil/*.c)))
$(BUILD)/bench_mil_step: bench/mil_step.c $(BUILD)/libncmi.a
	@mkdir -p $(dir $@)
	@echo "  LD    $@"
	@$(CC) $(CFLAGS_ALL) -Wl,--as-needed -o $@ bench/mil_step.c $(MIL_BENCH_OBJ) $(BUILD)/libncmi.a $(LDLIBS_ALL)

bench-mil: setup
	@$(MAKE) --no-print-directory all $(BUILD)/bench_mil_step
	@MIL_DEVICE=$(MIL_DEVICE) bash bench/mil_step.sh $(BUILD) $(MIL_HEADS) $(MIL_SIZES)

# Musk1 accuracy beside the PyTorch peer on the fixture's folds (bench/musk1.sh):
# make bench-musk1 [MUSK1_RECIPES=m500,ilse] [SEEDS=0-4]
bench-musk1: setup
	@$(MAKE) --no-print-directory all
	@bash bench/musk1.sh $(BUILD) $(MUSK1_RECIPES)

# static analysis: cppcheck + clang-tidy (.clang-tidy) on our C (and cppcheck on
# the CUDA kernels) with the build's flags; non-zero exit on any finding
# (docs/hardening.md). LINT_JOBS=N, LINT_ONLY=cppcheck|clang-tidy.
lint: setup
	@bash tools/lint.sh "-std=c11 -D_GNU_SOURCE -fopenmp $(PKG_CFLAGS) $(HDF5_CFLAGS) $(SLIDE_CFLAGS) $(FEATURE_DEFS)"

# ---- the benchmark report (bench/run_all.sh, bench/report.py) ----
# make bench: every CPU benchmark of bench/ (ncmi and its peer timed in the same
# run), raw logs in bench/logs/cpu/ (gitignored), report bench/RESULTS.md.
# BENCH_QUICK=1: fewer sizes and rounds (smoke run); BENCH_ONLY=ops,mil: a subset.
# make bench-gpu (above) writes bench/RESULTS-gpu.md the same way.
BENCH_BINS = $(BUILD)/tools/make_slides $(BUILD)/bench_ops $(BUILD)/bench_ncmi_overhead $(BUILD)/bench_mil_step \
  $(BUILD)/bench_natdata $(BUILD)/bench_preprocess $(BUILD)/bench_resnet
bench: setup
	@$(MAKE) --no-print-directory all $(BENCH_BINS)
	@bash bench/run_all.sh $(BUILD) cpu

# natural-image input pipelines vs torchvision transforms on the same JPEGs
bench-natdata: setup
	@$(MAKE) --no-print-directory all $(BUILD)/bench_natdata
	@bash bench/natdata.sh $(BUILD)

# patch resize + normalisation, one thread (ncmi only)
bench-preprocess: setup
	@$(MAKE) --no-print-directory all $(BUILD)/bench_preprocess
	@$(BUILD)/bench_preprocess

.PHONY: bench bench-natdata bench-preprocess

clean:
	rm -rf build build-san

# ---- whole cohorts (README "Whole cohorts", docs/cohorts.md) ----
# Stages of a slide cohort, driven by configs/datasets/$(DATASET).yaml through
# `ncmi cohort <stage>`; each redoes only what is missing or out of date:
#   make tile     DATASET=camelyon17 DATA_ROOT=/data/camelyon17   (slides -> WORK/tiles)
#   make features DATASET=camelyon17 DATA_ROOT=/data/camelyon17   (tile, then WORK/features)
#   make train    DATASET=camelyon17 HEAD=abmil LOSS=ncmi         (WORK/runs/<dataset>_<head>_<loss>)
#   make eval     DATASET=camelyon17                             (metrics of finished runs)
#   make table3   DATASET=camelyon17 DATA_ROOT=...               (all of it + reports/table3_<dataset>.md/.csv)
#   make report   DATASET=camelyon17                             (the table from the runs there are)
# Options: WORK=work/<dataset>, SHARD=K/N (slides for tile/features, runs for
# train/eval), SEEDS="0 1 2" (mean +- std in the table), ALLOW_MISSING=1,
# FORCE=1, JOBS=J (tile), DEVICE=cpu|cuda|auto, SPLIT=test|val (eval, report),
# REPORTS=reports, NO_BUILD=1 (do not rebuild first: parallel jobs on one tree). DATASET=synthetic
# (the default) generates its slides (tools/make_slides --cohort) into
# WORK/slides and needs no DATA_ROOT; make test-cohort is its CI check.
DATASET ?= synthetic
REPORTS ?= reports
cohort_comma := ,
cohort_empty :=
cohort_space := $(cohort_empty) $(cohort_empty)
COHORT_NAME = $(basename $(notdir $(DATASET)))
COHORT_WORK = $(if $(WORK),$(WORK),work/$(COHORT_NAME))
COHORT_ARGS = --dataset $(DATASET) --work $(COHORT_WORK) $(if $(DATA_ROOT),--data-root $(DATA_ROOT)) \
  $(if $(SHARD),--shard $(SHARD)) $(if $(filter 1,$(ALLOW_MISSING)),--allow-missing) \
  $(if $(filter 1,$(FORCE)),--force) $(if $(DEVICE),--device $(DEVICE))
COHORT_RUNS = $(if $(HEAD),--head $(HEAD)) $(if $(LOSS),--loss $(LOSS)) \
  $(if $(strip $(SEEDS)),--seeds $(subst $(cohort_space),$(cohort_comma),$(strip $(SEEDS))))
# OpenMP threads that wait instead of spinning: stages share the machine with their readers
COHORT_NCMI = OMP_WAIT_POLICY=$${OMP_WAIT_POLICY:-passive} $(BUILD)/ncmi cohort

# NO_BUILD=1: use the binaries as they are (several stages started at once on one
# source tree, e.g. Slurm tasks, must not rebuild them at the same time)
COHORT_BUILD = $(if $(filter 1,$(NO_BUILD)),,cohort-build)
cohort-build: setup
	@$(MAKE) --no-print-directory all $(BUILD)/tools/make_slides

slides: $(COHORT_BUILD)
	@$(COHORT_NCMI) slides $(COHORT_ARGS)

tile: slides
	@$(COHORT_NCMI) tile $(COHORT_ARGS) $(if $(JOBS),--jobs $(JOBS))

features: tile
	@$(COHORT_NCMI) features $(COHORT_ARGS)

train: $(COHORT_BUILD)
	@$(COHORT_NCMI) train $(COHORT_ARGS) $(COHORT_RUNS)

eval: $(COHORT_BUILD)
	@$(COHORT_NCMI) eval $(COHORT_ARGS) $(COHORT_RUNS) $(if $(SPLIT),--split $(SPLIT))

report: $(COHORT_BUILD)
	@$(BUILD)/ncmi report table3 --runs $(COHORT_WORK)/runs --dataset $(COHORT_NAME) $(if $(SPLIT),--split $(SPLIT)) \
	  --out $(REPORTS)/table3_$(COHORT_NAME)$(if $(filter-out test,$(SPLIT)),_$(SPLIT))

table3: features
	@$(COHORT_NCMI) train $(COHORT_ARGS) $(COHORT_RUNS)
	@$(COHORT_NCMI) eval $(COHORT_ARGS) $(COHORT_RUNS)
	@$(BUILD)/ncmi report table3 --runs $(COHORT_WORK)/runs --dataset $(COHORT_NAME) --out $(REPORTS)/table3_$(COHORT_NAME)

# CI: make table3 DATASET=synthetic in a fresh work folder, then the acceptance
# check of its table (every head with CE and NCMI rows, macro-F1 well above chance)
test-cohort: setup
	@bash tools/ci_table3.sh

.PHONY: cohort-build slides tile features train eval report table3 test-cohort

# ---- fuzzing (docs/fuzzing.md) ----
# make fuzz [FUZZ_SECONDS=60] [FUZZ=h5,json]: builds the libFuzzer harnesses
# tests/fuzz/fuzz_<name>.c with clang (-fsanitize=fuzzer,address,undefined) and
# the library sources (-fsanitize=fuzzer-no-link,...) into build-fuzz/, then
# runs each for FUZZ_SECONDS on a copy of tests/fuzz/corpus/<name>/ +
# regress/<name>/; fails on any crash, leak or sanitizer report (the input is
# left in build-fuzz/crash/). The regression inputs are also replayed by
# make test (tests/test_fuzz_regress.c).
FUZZ_SECONDS ?= 60
fuzz_comma := ,
FUZZ_CC ?= clang
FUZZ_BUILD := build-fuzz
FUZZ_NAMES := $(patsubst tests/fuzz/fuzz_%.c,%,$(filter-out tests/fuzz/fuzz_targets.c,$(wildcard tests/fuzz/fuzz_*.c)))
FUZZ_SAN := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
# our code, CPU only; clang-only warnings are not errors here (the gcc build enforces -Werror)
FUZZ_CFLAGS = -std=c11 -D_GNU_SOURCE -O1 -g -fopenmp -Wall -Wextra -Wno-pass-failed -MMD -MP $(FUZZ_SAN) \
  $(PKG_CFLAGS) $(HDF5_CFLAGS) $(SLIDE_CFLAGS) -DNCMI_HAVE_CUDA=0 -DNCMI_HAVE_CUDNN=0 -DNCMI_HAVE_NCCL=0 \
  -DNCMI_HAVE_MPI=0 -DNCMI_HAVE_OPENSLIDE=$(HAVE_OPENSLIDE) -DNCMI_HAVE_VIPS=$(HAVE_VIPS) -DNCMI_HAVE_HDF5=$(HAVE_HDF5)
FUZZ_LIBS = $(PKG_LIBS) $(HDF5_LIBS) $(SLIDE_LIBS) -lm -fopenmp
FUZZ_LIB_OBJ := $(LIB_SRC:%.c=$(FUZZ_BUILD)/%.o) $(FUZZ_BUILD)/tests/fuzz/fuzz_targets.o

$(FUZZ_BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC    $< (fuzz)"
	@$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

$(FUZZ_BUILD)/libncmi_fuzz.a: $(FUZZ_LIB_OBJ)
	@rm -f $@
	@ar rcs $@ $^

$(FUZZ_BUILD)/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_BUILD)/libncmi_fuzz.a
	@echo "  LD    $@"
	@$(FUZZ_CC) $(FUZZ_CFLAGS) -Werror -fsanitize=fuzzer -o $@ $< $(FUZZ_BUILD)/libncmi_fuzz.a $(FUZZ_LIBS)

fuzz-build:
	@command -v $(FUZZ_CC) >/dev/null || { echo "make fuzz needs clang (FUZZ_CC=$(FUZZ_CC))"; exit 2; }
	@$(MAKE) -s --no-print-directory $(FUZZ_NAMES:%=$(FUZZ_BUILD)/fuzz_%)

fuzz: fuzz-build
	@bash tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS) $(if $(FUZZ),$(subst $(fuzz_comma), ,$(FUZZ)),$(FUZZ_NAMES))

fuzz-clean:
	rm -rf $(FUZZ_BUILD)

.PHONY: fuzz fuzz-build fuzz-clean
-include $(FUZZ_LIB_OBJ:.o=.d)

.PHONY: all buildinfo setup demo test test-long lint test-gpu gpu-build bench-gpu golden bench-ops bench-features bench-resnet bench-tile bench-ncmi bench-mil bench-musk1 clean FORCE

-include $(LIB_OBJ:.o=.d) $(TEST_OBJ:.o=.d) $(GPU_TEST_OBJ:.o=.d) $(BUILD)/cli/main.d
