"""PyTorch side of bench/epoch.ts: training on the shipped LFW including data loading.
A DataLoader with 2 worker processes decodes (PIL), resizes, random-crops (scale
0.875–1), flips and jitters brightness (±10%) P×K batches drawn by a PK batch sampler;
the main process trains the twin network (bench/train_step.py's step: semi-hard mining,
triplet loss, AdaGrad). The clock runs from the folder scan to the last step.

Usage: python bench/epoch.py LFW_ROOT ARCH P K STEPS THREADS  → one JSON line.
"""
import json
import os
import random
import resource
import sys
import time

import numpy as np
import torch
from PIL import Image, ImageEnhance
from torch.utils.data import DataLoader, Dataset, Sampler

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from inference import INPUT, build, normalize  # noqa: E402
from mining import loss as triplet_loss, mine  # noqa: E402


class Faces(Dataset):
    def __init__(self, items, size, crop_scale=0.875):
        self.items, (self.h, self.w), self.crop_scale = items, size, crop_scale

    def __len__(self):
        return len(self.items)

    def __getitem__(self, key):
        i, draw = key
        path, label = self.items[i]
        rng = random.Random(draw)
        s = rng.uniform(self.crop_scale, 1.0)
        big = max(self.h, self.w, round(max(self.h, self.w) / s))
        img = Image.open(path).convert("RGB").resize((big, big), Image.LANCZOS)  # sharp's default kernel is lanczos3
        x, y = rng.randint(0, big - self.w), rng.randint(0, big - self.h)
        img = img.crop((x, y, x + self.w, y + self.h))
        if rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.9, 1.1))
        return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()), label


class PKBatches(Sampler):
    """P identities with at least 2 images × up to K images of each per batch, seeded, as
    facenet-torch's PKSampler (negatives 0)."""

    def __init__(self, by_identity, p, k, steps, seed=0):
        self.groups = [g for g in by_identity if len(g) >= 2]
        self.p, self.k, self.steps, self.rng = p, k, steps, random.Random(seed)

    def __len__(self):
        return self.steps

    def __iter__(self):
        order = []
        for b in range(self.steps):
            if len(order) < self.p:
                order += self.rng.sample(range(len(self.groups)), len(self.groups))
            ids, order = order[: self.p], order[self.p :]
            yield [(i, self.rng.getrandbits(32)) for g in ids for i in self.rng.sample(self.groups[g], min(self.k, len(self.groups[g])))]


def main():
    root, arch = sys.argv[1], sys.argv[2]
    p, k, steps, threads = (int(v) for v in sys.argv[3:7])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build(arch).train()
    opt = torch.optim.Adagrad(model.parameters(), lr=0.05, eps=1e-10)
    gen = torch.Generator().manual_seed(1)
    start = time.perf_counter()
    items, by_identity = [], []
    for label, name in enumerate(sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))):
        files = sorted(os.listdir(os.path.join(root, name)))
        by_identity.append(list(range(len(items), len(items) + len(files))))
        items += [(os.path.join(root, name, f), label) for f in files]
    loader = DataLoader(Faces(items, INPUT[arch]), batch_sampler=PKBatches(by_identity, p, k, steps), num_workers=2, prefetch_factor=2)
    seen, wait = 0, 0.0
    t = time.perf_counter()
    for pixels, labels in loader:
        wait += time.perf_counter() - t
        e = model(normalize(pixels, "fixed"))
        a, pp, n = mine(e.detach(), labels, gen)
        loss = triplet_loss(e, a, pp, n)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
        opt.step()
        loss.item()
        seen += pixels.shape[0]
        t = time.perf_counter()
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"images": seen, "seconds": elapsed, "imagesPerSecond": seen / elapsed, "dataWaitSeconds": wait, "peak_mb": peak}))


if __name__ == "__main__":
    main()
