#!/usr/bin/env bash
# GPU benchmarks on the lent machine (H200, torch 2.11 CUDA 13 for its python3, no Node):
# unpacks runs/gpu-bundle.tar.xz (made here by bench/gpu/pack.sh), links the addon against
# the torch/lib of that python3 through LD_LIBRARY_PATH, then runs bench/inference and
# bench/train-step on CUDA in fp32 beside the PyTorch twins on the same GPU, recording
# images/s, ratios and per-process peak GPU memory (nvidia-smi samples) into $OUT.
# bf16 autocast is not implemented in facenet-torch yet, so only fp32 runs.
#
#   bash bench/gpu/run.sh [--check]      (--check: unpack, link and report devices only)
#
# Environment: PYTHON (default python3), BUNDLE (default runs/gpu-bundle.tar.xz),
# OUT (default runs/gpu-out), INFER_ARCHS (default all), TRAIN_ARCHS (default below),
# DEVICE (default cuda), THREADS (default 16, CPU threads of both sides).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
BUNDLE=${BUNDLE:-runs/gpu-bundle.tar.xz}
OUT=${OUT:-runs/gpu-out}
DEVICE=${DEVICE:-cuda}
INFER_ARCHS=${INFER_ARCHS:-all}
TRAIN_ARCHS=${TRAIN_ARCHS:-nn4:45x40,nns1:15x20,nn1:15x20,inception-resnet-v1:15x20}
mkdir -p "$OUT"
log() { echo "[run.sh $(date +%T)] $*" | tee -a "$OUT/run.log"; }

[ -f "$BUNDLE" ] || { echo "run.sh: $BUNDLE missing; run bench/gpu/pack.sh and carry it" >&2; exit 1; }
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

# The addon needs libtorch 2.11's shared libraries: take those of the python that the
# PyTorch side runs on, so that both sides use the very same libtorch.
PY_EXE=$("$PYTHON" -c 'import sys; print(sys.executable)')
TORCH_LIB=$("$PYTHON" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
[ -f "$TORCH_LIB/libtorch_cpu.so" ] || { echo "run.sh: no libtorch_cpu.so in $TORCH_LIB" >&2; exit 1; }
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# The benches read the PyTorch python from .libtorch/python, as in a local checkout.
mkdir -p .libtorch && echo "$PY_EXE" > .libtorch/python
log "python $PY_EXE, torch lib $TORCH_LIB"
"$PYTHON" -c 'import torch, json; print(json.dumps({"torch": torch.__version__, "cuda": torch.version.cuda, "cudaAvailable": torch.cuda.is_available(), "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}))' | tee "$OUT/pytorch.json"
"$NODE" -e 'const f = require("./dist"); console.log(JSON.stringify(f.devices()))' | tee "$OUT/ours-devices.json"
# Which libtorch the addon actually loaded (its RUNPATH names the build machine's venv).
loaded=$("$NODE" -e 'require("./dist"); const l = require("fs").readFileSync("/proc/self/maps", "utf8").split("\n").find((x) => x.endsWith("/libtorch_cpu.so")); console.log(l ? l.split(/\s+/).pop() : "")')
log "addon loaded $loaded"
[ "$(readlink -f "$(dirname "$loaded")")" = "$(readlink -f "$TORCH_LIB")" ] || { log "the addon did not load libtorch from $TORCH_LIB"; exit 1; }
if command -v nvidia-smi > /dev/null; then nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true; fi
if [ "${1:-}" = "--check" ]; then log "check done"; exit 0; fi
[[ "$DEVICE" != cuda* ]] || grep -q '"cudaAvailable":true' "$OUT/ours-devices.json" || { log "the addon sees no CUDA device: stopping"; exit 1; }

# Per-process GPU memory, sampled every 0.25 s with the command line of each process, so
# that each side's peak can be read back (sides alternate, one process each).
sample() {
  while :; do
    nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits 2> /dev/null | while IFS=', ' read -r pid mem; do
      [ -n "$pid" ] && echo "$pid,$mem,$(tr '\0' ' ' < "/proc/$pid/cmdline" 2> /dev/null | cut -c1-200)"
    done
    sleep 0.25
  done >> "$OUT/gpu-mem.csv"
}
sample &
sampler=$!
trap 'kill "$sampler" 2> /dev/null || true; rm -rf "$stage"' EXIT

log "inference, $DEVICE, fp32, batch 32"
"$NODE" bench/inference.js "$DEVICE" "$INFER_ARCHS" "${THREADS:-16}" 2>&1 | tee "$OUT/inference.txt"
log "train step, $DEVICE, fp32: $TRAIN_ARCHS"
"$NODE" bench/train-step.js "$TRAIN_ARCHS" "${THREADS:-16}" 5 "$DEVICE" 2>&1 | tee "$OUT/train-step.txt"
kill "$sampler" 2> /dev/null || true

"$PY_EXE" - "$OUT/gpu-mem.csv" << 'PY' | tee "$OUT/gpu-mem-peaks.txt"
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
