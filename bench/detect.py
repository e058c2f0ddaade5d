"""PyTorch side of bench/detect.ts: facenet-pytorch 2.6.0's MTCNN.detect(..., landmarks=True),
BATCH photos per call (an N×H×W×3 array, which it batches through the pyramid), on the raw
RGB photos that bench/detect.ts wrote.

Usage: python bench/detect.py RAW COUNT HEIGHT WIDTH THREADS ROUNDS BATCH [DEVICE]  → one JSON line
       {"photosPerSecond": [per round], "faces": total faces of one round}
"""
import json
import sys
import time

import numpy as np
import torch
from facenet_pytorch import MTCNN

raw, count, height, width, threads, rounds, batch = sys.argv[1], *map(int, sys.argv[2:8])
device = sys.argv[8] if len(sys.argv) > 8 else "cpu"
torch.set_num_threads(threads)
photos = np.fromfile(raw, np.uint8).reshape(count, height, width, 3)
mtcnn = MTCNN(keep_all=True, device=device)
mtcnn.detect(photos[:batch], landmarks=True)
rates, faces = [], 0
for _ in range(rounds):
    faces = 0
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for at in range(0, count, batch):
        boxes, _, _ = mtcnn.detect(photos[at:at + batch], landmarks=True)
        faces += sum(0 if b is None else len(b) for b in boxes)
    rates.append(count / (time.perf_counter() - start))
print(json.dumps({"photosPerSecond": rates, "faces": faces}))
