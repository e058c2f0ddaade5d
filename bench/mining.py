"""PyTorch reference for bench/mining.ts: online semi-hard mining (random choice among
semi-hard negatives, TF-Addons fallback) plus the per-triplet loss and its gradient.

The usual vectorized formulation: each anchor-positive pair against every column of the
distance matrix (pairs × B masks), done in slices of pairs so that B = 4096 fits in memory.

Usage: python bench/mining.py B D ITERS  → one JSON line {"ms": [...], "peak_mb": ...}
"""
import json
import resource
import sys
import time

import torch

MARGIN = 0.2
PAIR_SLICE = 8192


def batch(b, d, seed):
    g = torch.Generator().manual_seed(seed)
    e = torch.nn.functional.normalize(torch.randn(b, d, generator=g), dim=1)
    labels = torch.arange(b) // 40  # the paper's ~40 faces per identity
    return e, labels[torch.randperm(b, generator=g)]


@torch.no_grad()
def mine(e, labels, gen):
    sq = (e * e).sum(1)
    d = (sq[:, None] + sq[None, :] - 2 * e @ e.T).clamp_min_(0)
    d.fill_diagonal_(0)
    same = labels[:, None] == labels[None, :]
    pos = same & ~torch.eye(len(e), dtype=torch.bool, device=e.device)
    a_all, p_all = pos.nonzero(as_tuple=True)
    out = []
    for s in range(0, len(a_all), PAIR_SLICE):
        a, p = a_all[s : s + PAIR_SLICE], p_all[s : s + PAIR_SLICE]
        dap = d[a, p][:, None]
        dan = d[a]
        neg = ~same[a]
        farther = neg & (dan > dap)
        semi = farther & (dan < dap + MARGIN)
        keys = torch.rand(dan.shape, generator=gen, device=e.device)
        pick = torch.where(semi, keys, -1.0).argmax(1)
        nearest_farther = torch.where(farther, dan, torch.inf).argmin(1)
        farthest = torch.where(neg, dan, -torch.inf).argmax(1)
        fallback = torch.where(farther.any(1), nearest_farther, farthest)
        n = torch.where(semi.any(1), pick, fallback)
        keep = neg.any(1)
        out.append((a[keep], p[keep], n[keep]))
    return [torch.cat(x) for x in zip(*out)]


def loss(e, a, p, n):
    x = torch.nn.functional.normalize(e, dim=1)
    dap = (x[a] - x[p]).pow(2).sum(1)
    dan = (x[a] - x[n]).pow(2).sum(1)
    return (dap - dan + MARGIN).clamp_min(0).mean()


def step(e, labels, gen):
    a, p, n = mine(e, labels, gen)
    x = e.detach().requires_grad_(True)
    loss(x, a, p, n).backward()
    return x.grad


def main():
    b, d, iters = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    e, labels = batch(b, d, 0)
    gen = torch.Generator().manual_seed(1)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    step(e, labels, gen)  # warm-up
    ms = []
    for _ in range(iters):
        t = time.perf_counter()
        step(e, labels, gen)
        ms.append((time.perf_counter() - t) * 1000)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"ms": ms, "peak_mb": (peak - base) / 1024, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
