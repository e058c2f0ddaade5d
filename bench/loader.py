"""PyTorch side of bench/loader.ts: a DataLoader (2 workers) over the same P×K batches,
from the packed images.npy (np.load, mmap) or from the JPEGs (torchvision.io), with
torchvision.transforms.v2 doing the same augmentation: a random resized crop of side
0.875–1 (area 0.766–1, square), a horizontal flip and brightness ±10%, to uint8
channels-last batches.

Usage: python bench/loader.py npy|jpeg <images.npy | lfw_root> <batches.json> <size>
→ prints one JSON line.
"""
import json
import sys
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.io import ImageReadMode, decode_jpeg, read_file
from torchvision.transforms import v2


class Faces(Dataset):
    def __init__(self, mode, source, paths, size):
        self.mode, self.source, self.paths = mode, source, paths
        self.images = None
        self.transform = v2.Compose(
            [
                v2.RandomResizedCrop(size, scale=(0.875**2, 1.0), ratio=(1.0, 1.0), antialias=True),
                v2.RandomHorizontalFlip(),
                v2.ColorJitter(brightness=0.1),
            ]
        )

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        if self.mode == "npy":
            if self.images is None:
                # Opened in each worker: a memory map, as the core's.
                self.images = np.load(self.source, mmap_mode="r")
            image = torch.from_numpy(np.array(self.images[i])).permute(2, 0, 1)
        else:
            image = decode_jpeg(read_file(self.paths[i]), mode=ImageReadMode.RGB)
        return self.transform(image).permute(1, 2, 0).contiguous()


def main():
    mode, source, batch_file, size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    spec = json.load(open(batch_file))
    torch.set_num_threads(1)
    dataset = Faces(mode, source, spec["paths"], size)
    loader = DataLoader(dataset, batch_sampler=spec["batches"], num_workers=2, prefetch_factor=2)
    seen = 0
    start = time.perf_counter()
    for images in loader:
        assert images.shape[1:] == (size, size, 3) and images.dtype == torch.uint8
        seen += images.shape[0]
    elapsed = time.perf_counter() - start
    print(json.dumps({"images": seen, "seconds": elapsed, "imagesPerSecond": seen / elapsed}))


if __name__ == "__main__":
    main()
