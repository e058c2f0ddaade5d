"""PyTorch side of bench/pipeline.ts: a DataLoader (2 workers, PIL decode) doing the same
work as the TS pipeline: decode, resize so that a crop of cropScale becomes the input
size, random crop, horizontal flip, brightness jitter, uint8 channels-last batches.

Usage: python bench/pipeline.py <lfw_root> <size> <images> <batch>  → prints one JSON line.
"""
import json
import os
import random
import sys
import time

import numpy as np
import torch
from PIL import Image, ImageEnhance
from torch.utils.data import DataLoader, Dataset


class Faces(Dataset):
    def __init__(self, paths, size, crop_scale=0.875):
        self.paths, self.size, self.crop_scale = paths, size, crop_scale

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        rng = random.Random(i)
        s = rng.uniform(self.crop_scale, 1.0)
        big = max(self.size, round(self.size / s))
        img = Image.open(self.paths[i]).convert("RGB").resize((big, big), Image.LANCZOS)
        x, y = rng.randint(0, big - self.size), rng.randint(0, big - self.size)
        img = img.crop((x, y, x + self.size, y + self.size))
        if rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.9, 1.1))
        return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()), 0


def main():
    root, size, count, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    paths = sorted(
        os.path.join(root, d, f)
        for d in os.listdir(root)
        if os.path.isdir(os.path.join(root, d))
        for f in os.listdir(os.path.join(root, d))
    )[:count]
    torch.set_num_threads(1)
    loader = DataLoader(Faces(paths, size), batch_size=batch, num_workers=2, prefetch_factor=2)
    seen = 0
    start = time.perf_counter()
    for images, _ in loader:
        assert images.shape[1:] == (size, size, 3) and images.dtype == torch.uint8
        seen += images.shape[0]
    elapsed = time.perf_counter() - start
    print(json.dumps({"images": seen, "seconds": elapsed, "imagesPerSecond": seen / elapsed}))


if __name__ == "__main__":
    main()
