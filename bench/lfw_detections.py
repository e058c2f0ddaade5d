"""Faces of the shipped LFW found by facenet-pytorch's MTCNN, as `facenet align --detections` JSON.

    ~/.cache/facenet-torch/torch-2.11.0/bin/python bench/lfw_detections.py data/lfw runs/lfw-mtcnn.json

Needs `pip install --no-deps facenet-pytorch==2.6.0 torchvision==0.26.0` in the torch venv.
Only its MTCNN module is loaded (the package's __init__ pulls in `requests` for weight
downloads, which MTCNN does not need). Default MTCNN options: min face 20, factor 0.709,
thresholds 0.6/0.7/0.7. Output: {"Name/Name_0001.jpg": [{box, score, landmarks}, ...]}.
"""
import importlib.util
import json
import os
import sys
import time
import types

spec = importlib.util.find_spec("facenet_pytorch")
package = types.ModuleType("facenet_pytorch")
package.__path__ = list(spec.submodule_search_locations)
sys.modules["facenet_pytorch"] = package

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from facenet_pytorch.models.mtcnn import MTCNN  # noqa: E402


def main(root, out, threads=1, batch=64):
    torch.set_num_threads(threads)
    mtcnn = MTCNN(device="cpu")
    files = sorted(
        os.path.relpath(os.path.join(d, f), root)
        for d, _, fs in os.walk(root)
        for f in fs
        if f.lower().endswith((".jpg", ".jpeg", ".png"))
    )
    result = {}
    started = time.time()
    for start in range(0, len(files), batch):
        chunk = files[start : start + batch]
        images = [np.asarray(Image.open(os.path.join(root, f)).convert("RGB")) for f in chunk]
        # MTCNN batches only images of one size; LFW's are all 150×150.
        by_size = {}
        for i, img in enumerate(images):
            by_size.setdefault(img.shape, []).append(i)
        for idx in by_size.values():
            boxes, probs, points = mtcnn.detect(np.stack([images[i] for i in idx]), landmarks=True)
            for k, i in enumerate(idx):
                faces = []
                if boxes[k] is not None:
                    for b, p, l in zip(boxes[k], probs[k], points[k]):
                        faces.append({"box": [float(v) for v in b], "score": float(p), "landmarks": [[float(x), float(y)] for x, y in l]})
                result[chunk[i]] = faces
        done = start + len(chunk)
        print(f"{done}/{len(files)} photos, {time.time() - started:.0f}s", file=sys.stderr, flush=True)
    with open(out, "w") as f:
        json.dump(result, f)
    none = sum(1 for v in result.values() if not v)
    several = sum(1 for v in result.values() if len(v) > 1)
    print(json.dumps({"photos": len(result), "noFace": none, "multipleFaces": several, "seconds": time.time() - started}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 1)
