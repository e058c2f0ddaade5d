#!/usr/bin/env bash
# Packs what the GPU machine lacks into one file, runs/gpu-bundle.tar.xz (ignored by git):
# the built addon, index.js, dist/, sharp and its runtime deps, this machine's Node binary,
# and the benches compiled to JS (imports of ../src rewritten to ../dist), because the
# GPU machine has neither Node nor node_modules (no tsx). Run from the repo root after
# `node scripts/build.mjs`; then copy runs/gpu-bundle.tar.xz to the GPU machine's checkout and run there:
#   bash bench/gpu/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
addon=facenet-torch.linux-x64-gnu.node
for f in "$addon" index.js dist/index.js node_modules/.bin/esbuild; do
  [ -e "$f" ] || { echo "pack: missing $f (run npm install and node scripts/build.mjs first)" >&2; exit 1; }
done
stage=runs/gpu-stage
rm -rf "$stage" && mkdir -p "$stage/bench" "$stage/node_modules/@img"
cp "$addon" index.js "$stage/"
cp -r dist "$stage/dist"
# dist/ loads sharp eagerly (the data loader); these are all the packages it requires.
cp -r node_modules/sharp node_modules/detect-libc node_modules/semver "$stage/node_modules/"
cp -r node_modules/@img/colour node_modules/@img/sharp-linux-x64 node_modules/@img/sharp-libvips-linux-x64 "$stage/node_modules/@img/"
for b in inference train-step cuda-check lfw-train; do
  node_modules/.bin/esbuild "bench/$b.ts" --format=cjs --platform=node --target=node20 --log-level=warning \
    | sed -e "s#require(\"\.\./src\")#require(\"../dist\")#" -e "s#require(\"\.\./src/model\")#require(\"../dist/model\")#" \
    > "$stage/bench/$b.js"
  if grep -q '\.\./src' "$stage/bench/$b.js"; then echo "pack: bench/$b.js still imports ../src" >&2; exit 1; fi
done
cp "$(readlink -f "$(command -v node)")" "$stage/node"
node --version > "$stage/node-version"
git rev-parse HEAD > "$stage/commit"
tar -C "$stage" -cf - . | xz -T0 -6 > runs/gpu-bundle.tar.xz
rm -rf "$stage"
size=$(stat -c %s runs/gpu-bundle.tar.xz)
echo "runs/gpu-bundle.tar.xz: $((size / 1048576)) MiB"
# Kept under 64 MiB, so that it fits the upload limits of remote GPU runners.
[ "$size" -lt $((60 * 1048576)) ] || { echo "pack: bundle too large (over 60 MiB)" >&2; exit 1; }
