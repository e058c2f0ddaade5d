"""PyTorch twin of the epoch miner for bench/epoch-mining.ts: the notebook's per-epoch
triplet list over a whole set of N embeddings. Every anchor-positive pair, a uniformly
random semi-hard negative (d(a,p) < d(a,n) < d(a,p) + alpha), else the nearest negative
farther than the positive, else the farthest negative; squared L2.

The usual vectorized formulation, `chunk` anchors at a time so that memory stays
O(chunk x N): each anchor-positive pair of the chunk against every column (pairs x N masks
and random keys), then argmax/argmin.

Usage: python bench/epoch_mining.py N CHUNK  -> one JSON line {"s": ..., "peak_mb": ..., ...}
"""
import json
import resource
import sys
import time

import torch

MARGIN = 0.2
D = 128
PER_IDENTITY = 10


def dataset(n, seed):
    g = torch.Generator().manual_seed(seed)
    e = torch.nn.functional.normalize(torch.randn(n, D, generator=g), dim=1)
    return e, torch.arange(n) // PER_IDENTITY


@torch.no_grad()
def mine_epoch(e, labels, chunk, gen):
    n = len(e)
    sq = (e * e).sum(1)
    cols = torch.arange(n)
    out, no_semi_hard = [], 0
    for start in range(0, n, chunk):
        rows = torch.arange(start, min(start + chunk, n))
        d = (sq[rows, None] + sq[None, :] - 2 * e[rows] @ e.T).clamp_min_(0)
        same = labels[rows, None] == labels[None, :]
        pos = same & (cols[None, :] != rows[:, None])
        a_loc, p = pos.nonzero(as_tuple=True)
        dap = d[a_loc, p][:, None]
        dan = d[a_loc]
        neg = ~same[a_loc]
        farther = neg & (dan > dap)
        semi = farther & (dan < dap + MARGIN)
        keys = torch.rand(dan.shape, generator=gen)
        pick = torch.where(semi, keys, -1.0).argmax(1)
        nearest = torch.where(farther, dan, torch.inf).argmin(1)
        farthest = torch.where(neg, dan, -torch.inf).argmax(1)
        has_semi = semi.any(1)
        fallback = torch.where(farther.any(1), nearest, farthest)
        chosen = torch.where(has_semi, pick, fallback)
        no_semi_hard += int((~has_semi).sum())
        keep = neg.any(1)
        out.append((rows[a_loc][keep], p[keep], chosen[keep]))
    a, p, n_ = (torch.cat(x) for x in zip(*out))
    return a, p, n_, no_semi_hard


def main():
    n, chunk = int(sys.argv[1]), int(sys.argv[2])
    e, labels = dataset(n, 0)
    gen = torch.Generator().manual_seed(1)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    a, p, neg, none = mine_epoch(e, labels, chunk, gen)
    s = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"s": s, "peak_mb": (peak - base) / 1024, "triplets": len(a), "no_semi_hard": none, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
