#!/usr/bin/env python3
"""Converts facenet-pytorch 2.6.0's MTCNN weights (pnet.pt, rnet.pt, onet.pt, torch pickles)
into one safetensors file, weights/mtcnn/mtcnn.safetensors, with tensors named
`pnet.conv1.weight`, `rnet.dense4.bias`, ... exactly as in facenet-pytorch's state dicts.

The library never unpickles: this script runs once, with the torch venv, and its output is
committed. `weights_only=True` keeps even this one-time load from executing pickled code.

Usage: python scripts/convert-mtcnn-weights.py [SOURCE_DIR] [OUT_DIR]
  SOURCE_DIR defaults to the installed facenet_pytorch package's data/ folder.
"""
import hashlib
import os
import sys

import torch
from safetensors.torch import save_file


def default_source():
    import importlib.util
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or spec.origin is None:
        sys.exit("facenet_pytorch is not installed; pass the folder holding pnet.pt/rnet.pt/onet.pt")
    return os.path.join(os.path.dirname(spec.origin), "data")


def main():
    source = sys.argv[1] if len(sys.argv) > 1 else default_source()
    out_dir = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(__file__), "..", "weights", "mtcnn")
    os.makedirs(out_dir, exist_ok=True)
    tensors = {}
    for net in ("pnet", "rnet", "onet"):
        state = torch.load(os.path.join(source, f"{net}.pt"), map_location="cpu", weights_only=True)
        for name, value in state.items():
            tensors[f"{net}.{name}"] = value.detach().to(torch.float32).contiguous()
    out = os.path.join(out_dir, "mtcnn.safetensors")
    save_file(tensors, out, metadata={"format": "facenet-torch-mtcnn", "source": "facenet-pytorch 2.6.0 (MIT)"})
    with open(out, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    with open(os.path.join(out_dir, "SHA256SUMS"), "w") as f:
        f.write(f"{digest}  mtcnn.safetensors\n")
    print(f"{out}: {len(tensors)} tensors, sha256 {digest}")


if __name__ == "__main__":
    main()
