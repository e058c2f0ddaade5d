"""PyTorch twin of crates/facenet/src/loss/margin.rs, written from the papers and insightface's
published formulas (ArcFace with its `easy_margin` switch, CosFace, softmax + centre loss).

Usage: python margin_loss.py IN.safetensors OUT.safetensors '{"type": "arcface", ...}'
IN holds embeddings (B×d), labels (B, int64), weights (C×d) and, for softmax-center, centers.
OUT gets loss (scalar) and the gradients d_embeddings, d_weights (and d_centers)."""
import json
import math
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

src, dst, config = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
t = load_file(src)
x = t["embeddings"].clone().requires_grad_(True)
w = t["weights"].clone().requires_grad_(True)
labels = t["labels"]
one_hot = F.one_hot(labels, w.shape[0]).to(x.dtype)
kind = config["type"]
if kind == "arcface":
    m, s = config["margin"], config["scale"]
    cos = F.normalize(x) @ F.normalize(w).t()
    target = (cos * one_hot).sum(1, keepdim=True)
    sin = (1.0 - target * target).clamp(0, 1).sqrt()
    phi = target * math.cos(m) - sin * math.sin(m)
    if config["easyMargin"]:
        phi = torch.where(target > 0, phi, target)
    else:
        phi = torch.where(target > math.cos(math.pi - m), phi, target - math.sin(math.pi - m) * m)
    logits = s * (cos * (1 - one_hot) + one_hot * phi)
    loss = F.cross_entropy(logits, labels)
elif kind == "cosface":
    m, s = config["margin"], config["scale"]
    cos = F.normalize(x) @ F.normalize(w).t()
    loss = F.cross_entropy(s * (cos - m * one_hot), labels)
else:
    c = t["centers"].clone().requires_grad_(True)
    loss = F.cross_entropy(x @ w.t(), labels) + 0.5 * config["centerWeight"] * ((x - c[labels]) ** 2).sum(1).mean()
loss.backward()
out = {"loss": loss.detach().reshape(1), "d_embeddings": x.grad, "d_weights": w.grad}
if kind == "softmax-center":
    out["d_centers"] = c.grad
save_file(out, dst)
