# One command to set up and run the main job (make demo), one to set up and run the tests (make test).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0

.PHONY: setup demo test bench bench-reference train eval gpu-wheels gpu-kit gpu-travel gpu-bench-kit gpu-site gpu-train gpu-forks gpu-slim gpu-wide gpu-session gpu-bench clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

# torch first and pinned: the CPU build; an unpinned torch pulls a multi-GB CUDA build
$(VENV)/.installed: $(BIN)/activate pyproject.toml
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[test]"
	touch $@

setup: $(VENV)/.installed

# compress the bundled sample images with the shipped model and print the report
demo: setup
	rm -rf manifests/demo
	$(BIN)/rgbatch compress tests/data --out manifests/demo; test $$? -le 1
	$(BIN)/rgbatch report manifests/demo

test: setup
	$(BIN)/python -m pytest -q

# The shipped model's run: resume it in the background from the committed training state
# (since step 26700 with the context coder's code length in the loss: docs/TRAINING.md).
# Stop it with `kill -TERM` (since session 56 it writes the checkpoint of the step under way, then exits).
# One thread leaves a core for other work; `make train TRAIN_THREADS=2` only while nothing else
# runs: beside other work its two threads wait on each other (session 25: not 50 steps in 38 minutes
# beside two single-thread jobs, where one thread makes 0.08 steps/s beside one).
TRAIN_THREADS ?= 1
# the rate term's weight: 1 from step 26700, 2 from 31300, 4 from 33467 (docs/TRAINING.md, "Rate weight")
RATE_WEIGHT ?= 4
# the shipped run's width: 0.375 since session 14 (widened from 0.25 at step 35139, docs/TRAINING.md, "Widening")
WIDTH ?= 0.375
RECIPE := --width $(WIDTH) --iterations 16 --steps 60000 --loss-weighting gain --msssim-weight 0.5 --rate-weight $(RATE_WEIGHT)
# --lr 3.125e-5: a 16th of the GPU's scale for a 16th of its pixels a step (docs/TRAINING.md: with
# the GPU's scale the CPU's small batches undid the GPU's gains at low depths in a few hundred steps)
# the data: the top-level training corpus and, since session 9, the high-resolution photos (issue 16)
TRAIN_DATA ?= ../shared/data/train ../shared/data/photos/train
# Since session 16 the CPU trains the decoder alone on the signs inference sends, in the closed loop
# with the frozen encoder (docs/TRAINING.md, "Signs"): every CPU run of the whole network lost
# (sessions 9, 13, 16), this one gained on both sets. `make train CPU_PART=` trains the whole network.
CPU_PART ?= --train-part decoder --binarize sign --msssim-weight 2 --rate-weight 0
# 192 px patches, 2 a batch, since session 22: MS-SSIM's five scales fit a patch, as in the benches (128 px, 4 a
# batch, since session 19, and 64 px, 16 a batch, before had run their course: docs/TRAINING.md, "Five scales");
# 4 a batch since session 27 (steps 41401-43300 on an AMX host in bf16, 6-8 s a step; session 28 shipped the
# mean of its 42500-42600 snapshots: docs/TRAINING.md, "Five scales")
TRAIN_ARGS := $(TRAIN_DATA) --out runs/main.pt $(RECIPE) $(CPU_PART) --patch 192 --batch-size 4 --lr 3.125e-5 \
	--checkpoint-every 50 --snapshot-every 100 --eval ../shared/data/kodak --eval-every 1000 --threads $(TRAIN_THREADS)
train: setup
	mkdir -p runs
	[ -f runs/main.pt ] || cp weights/train-state.pt runs/main.pt
	OMP_NUM_THREADS=$(TRAIN_THREADS) nohup nice -n 5 $(BIN)/rgbatch train $(TRAIN_ARGS) --resume >> runs/main.log 2>&1 &
	@echo "training in the background: tail -f runs/main.log"

# A candidate from the background run against the shipped model, as sessions 16-21 chose (docs/TRAINING.md,
# "Signs"): the mean of run EVAL_RUN's last EVAL_SNAPSHOTS snapshots with the shipped tables (a decoder-alone
# run's codes keep their statistics; refit them for any other run), on the first EVAL_LIMIT images of each set,
# float decoding, no classical codecs, no timing; BD-rate against the shipped model over depths 1-16 (the last
# rows printed). The shipped model's runs are kept under its model id and a hash of the package's code in
# runs/eval, so they are made once per code (until session 31 the model id alone: a codec change, such as
# session 30's post-filter, left the candidate measured against runs of the older code).
EVAL_RUN ?= main
EVAL_SNAPSHOTS ?= 3
EVAL_LIMIT ?= 8
EVAL_THREADS ?= 1
EVAL_BENCH = OMP_NUM_THREADS=$(EVAL_THREADS) $(BIN)/rgbatch bench --overwrite --limit $(EVAL_LIMIT) --classical none --decoding float --speed-images 0
eval: setup
	mkdir -p runs/eval
	$(BIN)/rgbatch export --overwrite --out runs/eval/$(EVAL_RUN).safetensors --tables-from rgbatch/models/default.safetensors \
		$$(ls runs/$(EVAL_RUN).step*.pt | sort -V | tail -$(EVAL_SNAPSHOTS) | sed '1!s/^/--average /')
	shipped=$$($(BIN)/rgbatch info | $(BIN)/python -c 'import json, sys; print(json.load(sys.stdin)["model_id"])'); \
	code=$$(cat rgbatch/*.py | sha256sum | cut -c1-8); \
	for set in kodak photos/val; do name=$$(basename $$set); base=runs/eval/$$shipped-$$code-$$name-$(EVAL_LIMIT); \
		[ -f $$base/summary.json ] || $(EVAL_BENCH) ../shared/data/$$set --out $$base --manifest $$base/bench.parquet > $$base.log; \
		$(EVAL_BENCH) ../shared/data/$$set --weights runs/eval/$(EVAL_RUN).safetensors --out runs/eval/$(EVAL_RUN)-$$name \
			--manifest runs/eval/$(EVAL_RUN)-$$name/bench.parquet > runs/eval/$(EVAL_RUN)-$$name.log; \
		echo "== $$set"; $(BIN)/python benchmarks/compare_models.py $$base/summary.json runs/eval/$(EVAL_RUN)-$$name/summary.json | tail -n 4; \
	done

# What a lent GPU machine needs and lacks (docs/TRAINING.md, "On a GPU"), in git-ignored folders
# for the device tool's carry: wheels of the two packages its image lacks, and a packed training
# set: one 192 px crop of each top-level training image and six of each high-resolution photo,
# 1112 crops (12.0 + 6.1 MiB; the photos 39 % of the pixels as in the full data; sessions 20-23
# packed two 160 px crops and twelve, 2224, for 128 px patches; docs/TRAINING.md, "On a GPU").
# The top-level crops at JPEG quality 92 since session 14, 95 before. Since session 43 they fill the
# room the call has left under CARRY_LIMIT_MIB (in a random order, whole crops): each shipped model
# adds its predecessor as a ~2.3 MiB delta to the tracked files, so re-run gpu-kit after a ship.
CARRY_LIMIT_MIB ?= 63.5
# MiB a device call carries: the tracked files, the untracked ones git does not ignore, .pack and
# .whl; the device tool refuses more than 64 MiB (docs/TRAINING.md, "On a GPU")
CARRIED = { git ls-files -z --cached --others --exclude-standard; find .pack .whl -type f -print0 2>/dev/null; } | \
	$(BIN)/python -c 'import os, sys; print(sum(os.path.getsize(p) for p in sys.stdin.read().split("\0") if os.path.isfile(p)) / 2**20)'
gpu-wheels: setup
	$(BIN)/pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
		-d .whl constriction==0.5.0 pytorch-msssim==1.0.0
gpu-kit: gpu-wheels
	rm -rf .pack/train-jpeg .pack/photos-jpeg
	$(BIN)/rgbatch pack ../shared/data/photos/train --out .pack/photos-jpeg --crop 192 --per-image 6 --jpeg-quality 95
	room=$$($(CARRIED) | $(BIN)/python -c 'import sys; print(f"{$(CARRY_LIMIT_MIB) - float(sys.stdin.read()):.3f}")') && \
	$(BIN)/rgbatch pack ../shared/data/train --out .pack/train-jpeg --crop 192 --per-image 1 --jpeg-quality 92 --max-mib $$room
	$(MAKE) gpu-travel
gpu-travel:
	@n=$$($(CARRIED)) && $(BIN)/python -c "n = $$n; print(f'a device call carries {n:.1f} MiB (at most 64)'); raise SystemExit(n > 64)"
# and for the speed benchmarks there (README, "Speed of the network"): the wheels and the shipped
# model's codes of Kodak at depth 16 (2.7 MB), which the coder's scaling across cores codes
gpu-bench-kit: gpu-wheels
	$(BIN)/python benchmarks/coder_speed.py --data ../shared/data/kodak --codes .pack/kodak16-codes.npz \
		--depths 16 --repeats 1 --workers 0 --no-reference

# On the lent GPU machine (its own python3 holds torch; carry .pack and .whl): the same run,
# resumed from the committed training state, 16x the pixels a step (32 patches of 192 px, since
# session 24, so that MS-SSIM has its five scales as in the benches; 64 of 128 px before),
# for GPU_SECONDS; the checkpoint runs/$(GPU_RUN).pt and its fp16 weights (last, and the mean of
# the last snapshots) are left in runs/ for the caller to bring back (docs/TRAINING.md, "On a GPU").
# Two runs with different GPU_RUN names can share the GPU: a width-0.25 step leaves it idle most
# of the time. Install the wheels once (make gpu-site) before starting them side by side.
GPU_SECONDS ?= 480
# patches a step. A rehearsal here, where python3 may not be 3.12 (the wheels' Python) and the venv
# has both packages: mkdir -p /tmp/site && touch /tmp/site/.installed, then
# PATH=$PWD/.venv/bin:$PATH make gpu-session GPU_SECONDS=1 GPU_BATCH=2 OUT=/tmp/out GPU_RUN=rehearse
GPU_BATCH ?= 32
GPU_RUN ?= gpu
GPU_SITE := /tmp/site
GPU_PYTHON := PYTHONPATH=$(GPU_SITE):. PYTHONUNBUFFERED=1 python3
GPU_RGBATCH := $(GPU_PYTHON) -m rgbatch.cli
gpu-site: $(GPU_SITE)/.installed
$(GPU_SITE)/.installed:
	python3 -m pip install -q --no-index --no-deps --target $(GPU_SITE) .whl/*.whl
	touch $@
gpu-train: gpu-site
	mkdir -p runs
	[ -f runs/$(GPU_RUN).pt ] || cp weights/train-state.pt runs/$(GPU_RUN).pt
	$(GPU_RGBATCH) train .pack/train-jpeg .pack/photos-jpeg --out runs/$(GPU_RUN).pt --resume $(RECIPE) --patch 192 --batch-size $(GPU_BATCH) \
		--lr 5e-4 --checkpoint-every 250 --snapshot-every 500 --time-limit $(GPU_SECONDS)
	$(GPU_RGBATCH) export runs/$(GPU_RUN).pt --overwrite --out runs/$(GPU_RUN)-last.safetensors
	$(GPU_RGBATCH) export runs/$(GPU_RUN).pt --overwrite --out runs/$(GPU_RUN)-mean.safetensors \
		$$(ls runs/$(GPU_RUN).step*.pt | sort -V | tail -3 | sed 's/^/--average /')

# Forks of the committed state side by side, one per rate weight in FORK_WEIGHTS (runs w<K>), then
# their states without Adam's moments, the model in fp16 (`rgbatch slim --half`: 12.3 MiB at width
# 0.375; with the moments a state is more than a call brings back) split into pieces the device
# tool brings back from $(OUT): two forks = two pieces, within its 64 MiB. On the lent machine: make gpu-forks GPU_SECONDS=490
FORK_WEIGHTS ?= 4 6
gpu-forks: gpu-site
	mkdir -p runs
	for k in $(FORK_WEIGHTS); do $(MAKE) gpu-train GPU_RUN=w$$k RATE_WEIGHT=$$k > $(OUT)/w$$k.log 2>&1 & done; wait
	for k in $(FORK_WEIGHTS); do $(MAKE) gpu-slim GPU_RUN=w$$k; done

# The state of run GPU_RUN without Adam's moments, the model in fp16 as shipped, in 15 MiB pieces
# in $(OUT) (resuming it starts Adam again with a warm-up: docs/TRAINING.md, "Widening")
gpu-slim:
	rm -f runs/$(GPU_RUN)-slim.pt
	$(GPU_RGBATCH) slim runs/$(GPU_RUN).pt --out runs/$(GPU_RUN)-slim.pt --half
	split -b 15M runs/$(GPU_RUN)-slim.pt $(OUT)/$(GPU_RUN).pt.

# Issue 16's capacity lever: the committed run widened to WIDE_WIDTH (Net2WiderNet: at its first
# step the same codes and images as the shipped model; docs/TRAINING.md, "Widening") and trained
# for GPU_SECONDS as run wide. The shipped run is width 0.375 since session 14 (1.9x the CPU
# encoding time of width 0.25, within issue 16's 2x); WIDE_WIDTH 0.5 (3.3x) is beyond that limit.
# Back come the state without Adam's moments (width 0.5: 19.4 MiB in fp16, two pieces) and the mean weights
# (16.1 MiB, two pieces). On the lent machine: make gpu-wide GPU_SECONDS=470
WIDE_WIDTH ?= 0.5
gpu-wide: gpu-site
	mkdir -p runs
	[ -f runs/wide.pt ] || $(GPU_RGBATCH) widen weights/train-state.pt --width $(WIDE_WIDTH) --out runs/wide.pt
	$(MAKE) gpu-train GPU_RUN=wide WIDTH=$(WIDE_WIDTH)
	$(MAKE) gpu-slim GPU_RUN=wide
	split -b 15M runs/wide-mean.safetensors $(OUT)/wide-mean.safetensors.

# A lent GPU's one training call for issue 16 (since session 14): the shipped run alone (run gpu; alone
# a width-0.375 run takes 5.5 steps/s on an H200, two side by side 3.0 each), then its state without
# Adam's moments (12.3 MiB in fp16, one piece) and the mean of its last snapshots (9.0 MiB) in $(OUT).
# Rehearse here with GPU_SECONDS=1 (above); on the lent machine: make gpu-session GPU_SECONDS=470
gpu-session: gpu-site
	@# whether that machine's Pillow reads AVIF: an AVIF pack holds 1.6x the crops of this JPEG one at the
	@# same PSNR (docs/TRAINING.md, "On a GPU"), unknown there until a lent machine says (session 41)
	-$(GPU_PYTHON) -c "import PIL; from PIL import features; print('Pillow', PIL.__version__, 'AVIF', features.check('avif'))" | tee $(OUT)/pillow.txt
	$(MAKE) gpu-train
	$(MAKE) gpu-slim
	cp runs/$(GPU_RUN)-mean.safetensors $(OUT)/

# Issue 18's speed figures on the lent machine (carry .whl and .pack/kodak16-codes.npz, made by
# make gpu-bench-kit): the encode workers of one GPU, then the coder alone across 1 and 4 cores;
# first, exact decoding's bytes on the GPU against the CPU's (since session 18)
gpu-bench: gpu-site
	$(GPU_PYTHON) benchmarks/exact_devices.py
	$(GPU_PYTHON) benchmarks/gpu_worker.py
	$(GPU_PYTHON) benchmarks/coder_speed.py --codes .pack/kodak16-codes.npz --depths 16 --workers 4 --no-reference

# Both evaluation sets (issue 16): Kodak -> docs/bench, the high-resolution photos -> docs/bench-photos.
# Classical results are cached in runs/classical-cache.jsonl: a re-bench encodes only rgbatch again.
# classical results are kept in the repository: the slow AVIF settings take hours on a 2-core machine,
# and a bench measures only what the cache lacks (docs/BENCH.md, "Classical results are cached")
CLASSICAL_CACHE ?= docs/classical-cache.jsonl.xz
# the network in fp32: the same codes on every host (bf16 encodings may differ near a binarizer's zero);
# the committed results are replaced (`rgbatch bench` refuses an earlier run's files without --overwrite)
BENCH_ARGS := --classical-cache $(CLASSICAL_CACHE) --precision fp32 --overwrite
bench: setup
	$(BIN)/rgbatch bench ../shared/data/kodak --out docs/bench --manifest manifests/bench-kodak/bench.parquet $(BENCH_ARGS)
	$(BIN)/rgbatch bench ../shared/data/photos/val --out docs/bench-photos --manifest manifests/bench-photos/bench.parquet \
		$(BENCH_ARGS)

# issue 16's reference, session 13's file, benched with the same code as the shipped one (since session 28):
# compare with `python benchmarks/compare_models.py docs/bench-reference-kodak/summary.json docs/bench/summary.json`
REFERENCE := rgbatch/models/89626a567b299efc.delta
bench-reference: setup
	$(BIN)/rgbatch bench ../shared/data/kodak --weights $(REFERENCE) --out docs/bench-reference-kodak \
		--manifest manifests/bench-reference-kodak/bench.parquet $(BENCH_ARGS) --speed-images 0
	$(BIN)/rgbatch bench ../shared/data/photos/val --weights $(REFERENCE) --out docs/bench-reference-photos \
		--manifest manifests/bench-reference-photos/bench.parquet $(BENCH_ARGS) --speed-images 0

clean:
	rm -rf $(VENV) .pytest_cache manifests/demo
