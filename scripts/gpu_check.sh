#!/usr/bin/env bash
# The GPU checks of one short device session (about 15 minutes of GPU time, setup included):
# every row of both tables rehearsed at the real batch of 8 in fp32 (with the resume from its
# checkpoint), then in bf16 and TF32 (without it), then `make bench` on CUDA. Results land in
# reports/rehearsal/ and reports/bench/ (and in $OUT when it is set); commit them, and `plan`
# and the bench report show them.
#
# A GPU machine with python3 and a CUDA build of torch but no OpenMMLab packages and no network
# (as ours are): run `scripts/gpu_check.sh wheels` on a networked machine first; it puts the
# packages the harness adds to such an image into .whl/ (git-ignored through .git/info/exclude;
# carry it to the GPU machine with the working tree), and this script installs them there.
# mmcv has no wheel for such a torch: its source is built there with its CPU ops only (the rows
# use none of its CUDA ops; mmseg imports the ops module).
#
# Each stage has a time limit so the whole fits the session; a stage that runs out leaves the
# rows it finished on record. Stages and limits (seconds): SETUP_S, FP32_S, BF16_S, TF32_S,
# BENCH_S.
#
# `scripts/gpu_check.sh --dry-run [DIR]` (`make gpu-check-dry-run`) runs every stage with the
# same commands on the CPU at tiny sizes, so that a broken stage shows here and not in the first
# paid GPU hour. Its files go under DIR (default: a new temporary folder), never into the
# committed reports/; it exits 1 when a stage failed. What a CPU cannot do, or not at tiny
# sizes, is swapped in the block after the limits, and the stage line says so.
# HARNESS_STAND_IN=file.py runs `$PY file.py` in place of `$PY -m harness` in each stage: the
# test of the script's own wiring (tests/test_gpu_script.py) puts one there that checks the
# stage's flags with the real parsers and writes placeholder results, in seconds; the stages'
# own work is tested by tests/test_rehearse.py and tests/test_bench.py.
set -uo pipefail
DRY_RUN=
if [ "${1:-}" = --dry-run ]; then
    # resolved before the cd below, so that a relative DIR means the caller's folder
    DRY_RUN=$(if [ -n "${2:-}" ]; then mkdir -p "$2" && cd "$2" && pwd
              else mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX"; fi) || exit 1
fi
cd "$(dirname "$0")/.."

# what the harness adds to such an image, at the versions of the CPU environment (.venv)
PACKAGES=(mmengine==0.10.7 mmsegmentation==1.2.2 addict==2.4.0 yapf==0.43.0 termcolor==3.3.0
          prettytable==3.19.0 wcwidth==0.9.4 ftfy==6.3.1 wandb==0.31.0 cwevals==0.0.1b1
          opentelemetry-api==1.45.2 opentelemetry-sdk==1.45.2
          opentelemetry-exporter-otlp-proto-http==1.45.2
          opentelemetry-exporter-otlp-proto-common==1.45.2 opentelemetry-proto==1.45.2
          opentelemetry-semantic-conventions==0.66b2 googleapis-common-protos==1.76.0
          platformdirs==4.14.9 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0
          typing-inspection==0.4.5 submitit==1.5.4)
# (the image's own numpy, opencv, matplotlib, pandas, rich, pyyaml, requests, protobuf, xxhash,
# filelock, cloudpickle and click serve as they are)
if [ "${1:-}" = wheels ]; then
    PYVER=${PYVER:-3.12}
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version "$PYVER" \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform any -d .whl "${PACKAGES[@]}" || exit 1
    python3 -m pip download --no-deps --no-binary=:all: -d .whl mmcv==2.1.0 || exit 1
    du -sh .whl
    exit 0
fi

# the limits fit a GPU session; a dry run's stages take minutes on a busy CPU
[ -z "$DRY_RUN" ] || : "${FP32_S:=900}" "${BF16_S:=900}" "${TF32_S:=900}" "${BENCH_S:=900}"
SETUP_S=${SETUP_S:-300} FP32_S=${FP32_S:-330} BF16_S=${BF16_S:-150} TF32_S=${TF32_S:-150}
BENCH_S=${BENCH_S:-150}
DEVICE=cuda
REHEARSE_SIZE=(--iters 4)
TF32=(--amp tf32) TF32_NOTE=
HARNESS=(-m harness) BENCH_SIZE=(--repeats 3) BENCH_NOTE=
REHEARSAL_DIR=reports/rehearsal BENCH_DIR=reports/bench
STAGE_NOTE=
REHEARSE_OUT=() BENCH_OUT=()  # expanded as ${A[@]+"${A[@]}"}: bash < 4.4 calls () unbound
if [ -n "$DRY_RUN" ]; then
    DEVICE=cpu
    REHEARSE_SIZE=(--rows seg-t-16 --iters 2 --batch 1)
    # rehearse refuses --amp tf32 without a GPU (TF32 is a tensor-core format); bench's --tf32
    # and --amp bf16 run on a CPU as they are
    TF32=() TF32_NOTE=' (dry run: fp32, --amp tf32 needs a GPU)'
    # the bench's tiny case (Seg-T-Mask/16 at 64 px): its CPU case takes many minutes
    BENCH_SIZE=(--rows seg-t-mask-16 --repeats 1 --warmup 0)
    BENCH_NOTE=' (dry run: cpu, seg-t-mask-16 at 64 px)'
    REHEARSAL_DIR=$DRY_RUN/rehearsal BENCH_DIR=$DRY_RUN/bench
    REHEARSE_OUT=(--out "$REHEARSAL_DIR" --work-root "$DRY_RUN/work")
    BENCH_OUT=(--out "$BENCH_DIR")
    OUT=${OUT:-$DRY_RUN/out}
    mkdir -p "$OUT"
    echo "dry run: $DEVICE, tiny sizes, files under $DRY_RUN"
fi
[ -z "${HARNESS_STAND_IN:-}" ] || HARNESS=("$HARNESS_STAND_IN")
export PYTHONUNBUFFERED=1 WANDB_MODE=offline
start=$SECONDS
failed=()
stage() { echo "== $1 (at $((SECONDS - start)) s)"; }

stage setup
PY=${PY:-python3}
if ! $PY -c 'import mmseg, mmcv.ops' 2>/dev/null; then
    [ -d .whl ] || { echo 'error: no .whl/ (run scripts/gpu_check.sh wheels first)' >&2; exit 1; }
    timeout "$SETUP_S" bash -c '
        set -e
        SITE=$PWD/.whl/site
        python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" .whl/*.whl
        export PYTHONPATH=$SITE
        mkdir -p .whl/mmcv-src && tar -xzf .whl/mmcv-2.1.0.tar.gz -C .whl/mmcv-src
        cd .whl/mmcv-src/mmcv-2.1.0
        # CPU ops only: hiding the GPU from the build keeps it to minutes
        CUDA_VISIBLE_DEVICES= MMCV_WITH_OPS=1 MAX_JOBS=$(nproc) python3 -m pip install -q \
            --no-index --no-deps --no-build-isolation --target "$SITE" .' \
        || { echo 'error: setup failed or ran out of time' >&2; exit 1; }
    export PYTHONPATH=$PWD/.whl/site${PYTHONPATH:+:$PYTHONPATH}
fi
$PY -c 'import sys, torch, mmseg, mmcv; print("torch", torch.__version__, torch.cuda.get_device_name(0) if sys.argv[1] == "cuda" else sys.argv[1], "mmseg", mmseg.__version__, "mmcv", mmcv.__version__)' "$DEVICE" || exit 1

rehearse() {  # precision label, time limit, extra arguments
    stage "rehearsal $1$STAGE_NOTE"
    timeout -k 60 "$2" $PY "${HARNESS[@]}" rehearse --table table3 --table table6 \
        --device "$DEVICE" "${REHEARSE_SIZE[@]}" ${REHEARSE_OUT[@]+"${REHEARSE_OUT[@]}"} "${@:3}" \
        || { echo "rehearsal $1: exit $? (rows on record kept)"; failed+=("rehearsal $1"); }
}
rehearse fp32 "$FP32_S"
rehearse bf16 "$BF16_S" --amp bf16 --no-resume
STAGE_NOTE=$TF32_NOTE rehearse tf32 "$TF32_S" ${TF32[@]+"${TF32[@]}"} --no-resume

stage "bench$BENCH_NOTE"
timeout -k 60 "$BENCH_S" $PY "${HARNESS[@]}" bench --device "$DEVICE" --amp bf16 --tf32 \
    --rounds 1 "${BENCH_SIZE[@]}" --no-overhead ${BENCH_OUT[@]+"${BENCH_OUT[@]}"} \
    || { echo "bench: exit $?"; failed+=(bench); }

stage done
if [ -n "${OUT:-}" ]; then
    cp "$REHEARSAL_DIR"/rehearsal.json "$REHEARSAL_DIR"/rehearsal.md "$OUT"/ 2>/dev/null \
        || failed+=("copy of the rehearsal")
    cp "$BENCH_DIR"/bench.json "$BENCH_DIR"/bench.md "$OUT"/ 2>/dev/null \
        || failed+=("copy of the bench")
fi
ls -l "$REHEARSAL_DIR" "$BENCH_DIR"
rc=$?
if [ -n "$DRY_RUN" ]; then
    if [ ${#failed[@]} -gt 0 ]; then
        printf -v list '%s, ' "${failed[@]}"
        echo "dry run: failed: ${list%, }" >&2
        exit 1
    fi
    rm -rf "$DRY_RUN/work"  # the rehearsals' job folders: only worth keeping after a failure
    echo "dry run: passed; files under $DRY_RUN"
fi
exit $rc
