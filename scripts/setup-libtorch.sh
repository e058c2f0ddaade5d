#!/usr/bin/env bash
# Provisions libtorch for the build, once per machine:
#   1. torch==2.11.0 from PyPI (the libtorch tch 0.24 targets) into a venv under the
#      user's cache directory, shared by every clone: $FACENET_TORCH_HOME, else
#      ${XDG_CACHE_HOME:-~/.cache}/facenet-torch. About 3 GB on Linux (CUDA runtime included).
#   2. <repo>/.libtorch/{include,lib,build-version}, which .cargo/config.toml points
#      LIBTORCH at, so plain cargo commands and `napi build` need nothing exported.
# Idempotent, and silent when everything is already there.
set -euo pipefail

TORCH_VERSION="2.11.0"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_ROOT="${FACENET_TORCH_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/facenet-torch}"
VENV="$CACHE_ROOT/torch-$TORCH_VERSION"
PYTHON="${PYTHON:-python3}"

if ! [ -f "$VENV/.complete" ]; then
  echo "facenet-torch: installing torch==$TORCH_VERSION into $VENV (about 3 GB, once per machine)" >&2
  mkdir -p "$CACHE_ROOT"
  # Build in a scratch venv and rename it, so an interrupted install is never taken for
  # a complete one.
  TMP="$VENV.partial.$$"
  rm -rf "$TMP"
  "$PYTHON" -m venv "$TMP"
  "$TMP/bin/python" -m pip install --quiet --disable-pip-version-check "torch==$TORCH_VERSION"
  rm -rf "$VENV"
  mv "$TMP" "$VENV"
  "$PYTHON" -m venv --upgrade "$VENV" >/dev/null
  touch "$VENV/.complete"
fi

# What the specs' cross-checks and the benchmarks' PyTorch twins import. Checked on every
# run (cheaply), so an install made by an older version of this script gets them too.
if ! "$VENV/bin/python" -c 'import numpy, sklearn, scipy, safetensors, PIL' 2>/dev/null; then
  echo "facenet-torch: installing numpy, scikit-learn, safetensors and pillow into $VENV" >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check numpy scikit-learn scipy safetensors pillow
fi

# facenet-pytorch's MTCNN, for the detection parity spec and benchmark, and the torchvision
# that matches torch 2.11.0 (its NMS). --no-deps: their pins would replace this torch;
# requests and tqdm are what facenet_pytorch's package imports besides torch.
if ! "$VENV/bin/python" -c 'from facenet_pytorch import MTCNN; import torchvision' 2>/dev/null; then
  echo "facenet-torch: installing facenet-pytorch 2.6.0 and torchvision 0.26.0 into $VENV" >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps facenet-pytorch==2.6.0 torchvision==0.26.0
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check requests tqdm
fi

TORCH_DIR="$("$VENV/bin/python" -c 'import os, torch; print(os.path.dirname(torch.__file__))')"
VERSION="$("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"
case "$VERSION" in
  "$TORCH_VERSION"|"$TORCH_VERSION"+*) ;;
  *) echo "facenet-torch: $VENV has torch $VERSION, expected $TORCH_VERSION; remove it and rerun" >&2; exit 1 ;;
esac

LINK="$REPO/.libtorch"
mkdir -p "$LINK"
ln -sfn "$TORCH_DIR/include" "$LINK/include"
ln -sfn "$TORCH_DIR/lib" "$LINK/lib"
# torch-sys checks this file against the version tch was generated for.
printf '%s\n' "$VERSION" > "$LINK/build-version"
printf '%s\n' "$VENV/bin/python" > "$LINK/python"
