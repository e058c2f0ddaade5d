"""PyTorch side of bench/train-step.ts: one FaceNet training step on a P×K batch of
random uint8 pixels, the same work as facenet-torch's trainStep: normalize, forward in
train mode, online semi-hard mining on the embeddings' device (bench/mining.py's miner), triplet loss on
L2-normalized embeddings, backward, global gradient norm, Adagrad step (lr 0.05, eps 1e-10),
plus the mean pairwise distance that the core reports each step. The network is the twin
in bench/inference.py.

It is a line server so that the driver can alternate steps with facenet-torch's:
  stdin "step" → stdout {"seconds": s};  stdin "rss" → {"peak_mb": ...};  EOF ends.

Usage: python bench/train_step.py ARCH P K THREADS [DEVICE] [fp32|bf16]
"""
import json
import os
import resource
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from inference import INPUT, autocast, build, normalize  # noqa: E402
from mining import loss as triplet_loss, mine  # noqa: E402


def make_step(arch, p, k, threads, device="cpu", precision="fp32"):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build(arch).train().to(device)
    opt = torch.optim.Adagrad(model.parameters(), lr=0.05, eps=1e-10)
    h, w = INPUT[arch]
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (p * k, h, w, 3), dtype=torch.uint8, generator=gen)
    # Mining runs where the embeddings are, as facenet-torch's does (on a GPU too).
    labels = torch.arange(p).repeat_interleave(k).to(device)
    mine_gen = torch.Generator(device=device).manual_seed(1)

    def step():
        with autocast(device, precision):
            e = model(normalize(pixels.to(device), "fixed"))
        e = e.float()
        a, pp, n = mine(e.detach(), labels, mine_gen)
        loss = triplet_loss(e, a, pp, n)
        with torch.no_grad():
            d = torch.cdist(e.detach(), e.detach()).pow(2).mean().item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf")).item()
        opt.step()
        return loss.item(), grad_norm, d

    return step


def peak_mb(device):
    out = {"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.startswith("cuda"):
        out["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        out["gpu_reserved_mb"] = torch.cuda.max_memory_reserved() / 2**20
    return out


def main():
    arch, p, k, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    device = sys.argv[5] if len(sys.argv) > 5 else "cpu"
    precision = sys.argv[6] if len(sys.argv) > 6 else "fp32"
    step = make_step(arch, p, k, threads, device, precision)
    print(json.dumps({"ready": True, "threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "step":
            start = time.perf_counter()
            loss, _, _ = step()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            print(json.dumps({"seconds": time.perf_counter() - start, "loss": loss}), flush=True)
        elif cmd == "rss":
            print(json.dumps(peak_mb(device)), flush=True)


if __name__ == "__main__":
    main()
