#!/usr/bin/env bash
# GPU checks and benchmarks on a GPU machine that has torch 2.11 (CUDA 13) for its python3
# but no Node and no network: unpacks runs/gpu-bundle.tar.xz (made here by bench/gpu/pack.sh), links the
# addon against the torch/lib of that python3 through FACENET_TORCH_HOME, then runs, each
# writing into $OUT as it goes (so a run cut short still returns what it did):
#   1. bench/cuda-check: Trainer on CUDA in fp32 and bf16, CPU/CUDA agreement, resume, NaN guard;
#   2. bench/train-step in fp32 and bf16 beside the PyTorch twin on the same GPU;
#   3. bench/inference in fp32 and bf16 beside the PyTorch twin;
# with per-process peak GPU memory (nvidia-smi samples). At most 7 files land in $OUT, so a
# runner that copies back only a few files still returns all of them.
#
#   bash bench/gpu/run.sh [--check]      (--check: unpack, link and report devices only)
#
# Environment: PYTHON (default python3), BUNDLE (default runs/gpu-bundle.tar.xz),
# OUT (default runs/gpu-out), INFER_ARCHS, TRAIN_ARCHS (defaults below), CHECK_ARCH
# (default nn4), DEVICE (default cuda), THREADS (default 16, CPU threads of both sides),
# STAGES (default check,train,infer: which of 1–3 to run).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
BUNDLE=${BUNDLE:-runs/gpu-bundle.tar.xz}
OUT=${OUT:-runs/gpu-out}
DEVICE=${DEVICE:-cuda}
INFER_ARCHS=${INFER_ARCHS:-nn4,nn1,inception-resnet-v1}
TRAIN_ARCHS=${TRAIN_ARCHS:-nn4:45x40,nn1:15x20,inception-resnet-v1:15x20}
CHECK_ARCH=${CHECK_ARCH:-nn4}
STAGES=",${STAGES:-check,train,infer},"
mkdir -p "$OUT"
log() { echo "[run.sh $(date +%T)] $*" | tee -a "$OUT/run.log"; }

[ -f "$BUNDLE" ] || { echo "run.sh: $BUNDLE missing; run bench/gpu/pack.sh and copy it to this machine" >&2; exit 1; }
stage=$(mktemp -d)
xz -dc "$BUNDLE" | tar -C "$stage" -xf -
# The device's copy of the tree is disposable: install the bundle over it.
cp "$stage/facenet-torch.linux-x64-gnu.node" "$stage/index.js" .
rm -rf dist && cp -r "$stage/dist" dist
mkdir -p node_modules/@img
cp -r "$stage"/node_modules/sharp "$stage"/node_modules/detect-libc "$stage"/node_modules/semver node_modules/
cp -r "$stage"/node_modules/@img/* node_modules/@img/
cp "$stage"/bench/*.js bench/
NODE="$stage/node"
chmod +x "$NODE"
log "bundle of commit $(cat "$stage/commit"), node $("$NODE" --version)"

# The addon finds libtorch at load time (src/libtorch.ts): point it at the torch of the
# python that the PyTorch side runs on, so that both sides use the very same libtorch.
PY_EXE=$("$PYTHON" -c 'import sys; print(sys.executable)')
TORCH_LIB=$("$PYTHON" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
[ -f "$TORCH_LIB/libtorch_cpu.so" ] || { echo "run.sh: no libtorch_cpu.so in $TORCH_LIB" >&2; exit 1; }
export FACENET_TORCH_HOME="$(dirname "$TORCH_LIB")"
# The benches read the PyTorch python from .libtorch/python, as in a local checkout.
mkdir -p .libtorch && echo "$PY_EXE" > .libtorch/python
log "python $PY_EXE, torch lib $TORCH_LIB"
"$PYTHON" -c 'import torch, json; print(json.dumps({"torch": torch.__version__, "cuda": torch.version.cuda, "cudaAvailable": torch.cuda.is_available(), "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}))' | tee -a "$OUT/run.log"
"$NODE" -e 'const f = require("./dist"); console.log(JSON.stringify(f.devices()))' | tee "$stage/ours-devices.json" | tee -a "$OUT/run.log"
# Which libtorch the addon actually loaded (the addon carries no path of its own).
loaded=$("$NODE" -e 'require("./dist"); const l = require("fs").readFileSync("/proc/self/maps", "utf8").split("\n").find((x) => x.endsWith("/libtorch_cpu.so")); console.log(l ? l.split(/\s+/).pop() : "")')
log "addon loaded $loaded"
[ "$(readlink -f "$(dirname "$loaded")")" = "$(readlink -f "$TORCH_LIB")" ] || { log "the addon did not load libtorch from $TORCH_LIB"; exit 1; }
if command -v nvidia-smi > /dev/null; then nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee -a "$OUT/run.log" || true; fi
if [ "${1:-}" = "--check" ]; then log "check done"; exit 0; fi
[[ "$DEVICE" != cuda* ]] || grep -q '"cudaAvailable":true' "$stage/ours-devices.json" || { log "the addon sees no CUDA device: stopping"; exit 1; }

# Per-process GPU memory, sampled every 0.25 s with the command line of each process, so
# that each side's peak can be read back (sides alternate, one process each).
sample() {
  while :; do
    nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits 2> /dev/null | while IFS=', ' read -r pid mem; do
      [ -n "$pid" ] && echo "$pid,$mem,$(tr '\0' ' ' < "/proc/$pid/cmdline" 2> /dev/null | cut -c1-200)"
    done
    sleep 0.25
  done >> "$stage/gpu-mem.csv"
}
sample &
sampler=$!
trap 'kill "$sampler" 2> /dev/null || true; rm -rf "$stage"' EXIT

if [[ "$STAGES" == *,check,* ]]; then
  log "cuda-check, $DEVICE, $CHECK_ARCH"
  "$NODE" bench/cuda-check.js "$DEVICE" "$CHECK_ARCH" 30 2>&1 | tee "$OUT/cuda-check.txt" || log "cuda-check: some checks failed"
fi
[[ "$STAGES" == *,train,* ]] && for precision in fp32 bf16; do
  log "train step, $DEVICE, $precision: $TRAIN_ARCHS"
  "$NODE" bench/train-step.js "$TRAIN_ARCHS" "${THREADS:-16}" 5 "$DEVICE" "$precision" 2>&1 | tee "$OUT/train-step-$precision.txt" || log "train step $precision failed"
done
[[ "$STAGES" == *,infer,* ]] && for precision in fp32 bf16; do
  log "inference, $DEVICE, $precision, batch 32: $INFER_ARCHS"
  ITERS=${ITERS:-20} "$NODE" bench/inference.js "$DEVICE" "$INFER_ARCHS" "${THREADS:-16}" "$precision" 2>&1 | tee "$OUT/inference-$precision.txt" || log "inference $precision failed"
done
kill "$sampler" 2> /dev/null || true

"$PY_EXE" - "$stage/gpu-mem.csv" << 'PY' | tee "$OUT/gpu-mem-peaks.txt"
import collections, sys
peak = collections.defaultdict(int)
for line in open(sys.argv[1]):
    pid, mem, cmd = line.rstrip("\n").split(",", 2)
    peak[cmd.strip() or f"pid {pid}"] = max(peak[cmd.strip() or f"pid {pid}"], int(mem))
print("peak GPU MiB per process (nvidia-smi used_memory; the in-process inference bench of ours shares the driver's node process)")
for cmd, mem in sorted(peak.items()):
    print(f"{mem:8d}  {cmd}")
PY
log "done"
