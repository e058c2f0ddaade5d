"""PyTorch twins of the facenet-torch model zoo, and the PyTorch side of the inference
benchmark (bench/inference.ts runs it and prints the ratios).

The twins mirror crates/facenet/src/model/ layer for layer, with the same state_dict
names, so a safetensors file that facenet-torch writes loads into them (see
__test__/fixtures/check_safetensors.py). They are written from the paper and the Rust
code, not copied from any other project.

Usage: python bench/inference.py ARCH BATCH ITERS THREADS [DEVICE] [fp32|bf16] [uint8|float32]
       → one JSON line
       {"arch": ..., "imagesPerSecond": ..., "seconds": [...]}
"""

import contextlib
import json
import math
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

INPUT = {
    "tiny": (64, 64),
    "nn1": (220, 220),
    "nn1-paper": (220, 220),
    "nn2": (224, 224),
    "nn3": (160, 160),
    "nn4": (96, 96),
    "nns1": (165, 165),
    "nns2": (140, 116),
    "inception-resnet-v1": (160, 160),
    "iresnet18": (112, 112),
    "iresnet34": (112, 112),
    "iresnet50": (112, 112),
}


def maxpool(x, k=3, s=2, p=1):
    return F.max_pool2d(x, k, s, p)


def lrn(x):
    return F.local_response_norm(x, 5, alpha=1e-4, beta=0.75, k=1.0)


def l2pool(x, s):
    sums = F.avg_pool2d(x * x, 3, s, 1, count_include_pad=True, divisor_override=1)
    return (sums.clamp_min(0) + 1e-10).sqrt()


def l2_normalize(x):
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


class Unit(nn.Module):
    """conv → (bn) → relu, tensors conv.* and bn.*"""

    def __init__(self, cin, cout, k, s=1, p=None, bias=False, bn=True, eps=1e-5):
        super().__init__()
        kh, kw = (k, k) if isinstance(k, int) else k
        if p is None:
            p = (kh // 2, kw // 2)
        self.conv = nn.Conv2d(cin, cout, (kh, kw), s, p, bias=bias)
        self.bn = nn.BatchNorm2d(cout, eps=eps, momentum=0.1) if bn else None

    def forward(self, x):
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x)


class Nn1(nn.Module):
    CONVS = [("conv1", 3, 64, 7, 2, True), ("conv2a", 64, 64, 1, 1, False),
             ("conv2", 64, 192, 3, 1, True), ("conv3a", 192, 192, 1, 1, False),
             ("conv3", 192, 384, 3, 1, True), ("conv4a", 384, 384, 1, 1, False),
             ("conv4", 384, 256, 3, 1, False), ("conv5a", 256, 256, 1, 1, False),
             ("conv5", 256, 256, 3, 1, False), ("conv6a", 256, 256, 1, 1, False),
             ("conv6", 256, 256, 3, 1, True)]

    def __init__(self, dim):
        super().__init__()
        for name, cin, cout, k, s, _ in self.CONVS:
            setattr(self, name, Unit(cin, cout, k, s))
        self.fc1 = nn.Linear(128 * 7 * 7, 4096)
        self.fc2 = nn.Linear(4096, dim)

    def forward(self, x):
        for name, *_, pool in self.CONVS:
            x = getattr(self, name)(x)
            if pool:
                x = maxpool(x)
        n, c, h, w = x.shape
        x = x.view(n, c // 2, 2, h, w).amax(2).flatten(1)
        x = F.dropout(F.relu(self.fc1(x)), 0.2, self.training)
        return l2_normalize(self.fc2(x))


class Nn1Paper(nn.Module):
    CONVS = [("conv1", 64, 7, 2, "pool_norm"), ("conv2a", 64, 1, 1, ""),
             ("conv2", 192, 3, 1, "norm_pool"), ("conv3a", 192, 1, 1, ""),
             ("conv3", 384, 3, 1, "pool"), ("conv4a", 384, 1, 1, ""),
             ("conv4", 256, 3, 1, ""), ("conv5a", 256, 1, 1, ""),
             ("conv5", 256, 3, 1, ""), ("conv6a", 256, 1, 1, ""),
             ("conv6", 256, 3, 1, "pool")]

    def __init__(self, dim):
        super().__init__()
        cin = 3
        for name, cout, k, s, _ in self.CONVS:
            setattr(self, name, Unit(cin, cout, k, s, bias=True, bn=False))
            cin = cout
        self.fc1 = nn.Linear(256 * 7 * 7, 8192)
        self.fc2 = nn.Linear(4096, 8192)
        self.fc7128 = nn.Linear(4096, dim)

    def forward(self, x):
        for name, *_, after in self.CONVS:
            x = getattr(self, name)(x)
            if after == "pool":
                x = maxpool(x)
            elif after == "pool_norm":
                x = lrn(maxpool(x))
            elif after == "norm_pool":
                x = maxpool(lrn(x))
        x = self.fc1(x.flatten(1))
        x = x.view(x.shape[0], -1, 2).amax(2)
        x = self.fc2(x)
        x = x.view(x.shape[0], -1, 2).amax(2)
        return l2_normalize(self.fc7128(x))


# (name, c1, r3, c3, r5, c5, pool, proj, stride): Table 2
NN2_MODULES = [
    ("inception_3a", 64, 96, 128, 16, 32, "max", 32, 1),
    ("inception_3b", 64, 96, 128, 32, 64, "l2", 64, 1),
    ("inception_3c", 0, 128, 256, 32, 64, "max", 0, 2),
    ("inception_4a", 256, 96, 192, 32, 64, "l2", 128, 1),
    ("inception_4b", 224, 112, 224, 32, 64, "l2", 128, 1),
    ("inception_4c", 192, 128, 256, 32, 64, "l2", 128, 1),
    ("inception_4d", 160, 144, 288, 32, 64, "l2", 128, 1),
    ("inception_4e", 0, 160, 256, 64, 128, "max", 0, 2),
    ("inception_5a", 384, 192, 384, 48, 128, "l2", 128, 1),
    ("inception_5b", 384, 192, 384, 48, 128, "max", 128, 1),
]


class Inception(nn.Module):
    def __init__(self, cin, c1, r3, c3, r5, c5, pool, proj, stride):
        super().__init__()
        self.pool_kind, self.stride = pool, stride
        self.conv1x1 = Unit(cin, c1, 1, stride) if c1 else None
        if c3:
            self.conv3x3_reduce = Unit(cin, r3, 1)
            self.conv3x3 = Unit(r3, c3, 3, stride)
        self.has3 = bool(c3)
        if c5:
            self.conv5x5_reduce = Unit(cin, r5, 1)
            self.conv5x5 = Unit(r5, c5, 5, stride)
        self.has5 = bool(c5)
        self.pool_proj = Unit(cin, proj, 1) if proj else None
        self.out = c1 + c3 + c5 + (proj if proj else cin)

    def forward(self, x):
        out = []
        if self.conv1x1 is not None:
            out.append(self.conv1x1(x))
        if self.has3:
            out.append(self.conv3x3(self.conv3x3_reduce(x)))
        if self.has5:
            out.append(self.conv5x5(self.conv5x5_reduce(x)))
        p = maxpool(x, 3, self.stride, 1) if self.pool_kind == "max" else l2pool(x, self.stride)
        out.append(self.pool_proj(p) if self.pool_proj is not None else p)
        return torch.cat(out, 1)


class InceptionNet(nn.Module):
    def __init__(self, arch, dim):
        super().__init__()
        modules = [list(m) for m in NN2_MODULES]
        c1, c2r, c2, divisor, hidden = 64, 64, 192, 1, None
        if arch == "nn4":
            for m in modules:
                if m[0].startswith("inception_5"):
                    m[4] = m[5] = 0
        elif arch == "nns1":
            c1, c2r, c2, divisor, hidden = 16, 16, 64, 2, 1280
        elif arch == "nns2":
            c1, c2r, c2, divisor, hidden = 8, 8, 24, 4, 768
            keep = {"inception_3a", "inception_3c", "inception_4a", "inception_4e", "inception_5a"}
            modules = [m for m in modules if m[0] in keep]
        self.conv1 = Unit(3, c1, 7, 2)
        self.conv2_reduce = Unit(c1, c2r, 1)
        self.conv2 = Unit(c2r, c2, 3)
        cin = c2
        self.names = []
        for name, *widths, pool, proj, stride in modules:
            widths = [w // divisor for w in widths]
            module = Inception(cin, *widths, pool, proj // divisor, stride)
            setattr(self, name, module)
            self.names.append(name)
            cin = module.out
        self.hidden = hidden
        if hidden is None:
            self.fc = nn.Linear(cin, dim)
        else:
            h, w = INPUT[arch]
            for _ in range(5):
                h, w = (h + 1) // 2, (w + 1) // 2
            self.fc1 = nn.Linear(cin * h * w, hidden)
            self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        x = lrn(maxpool(self.conv1(x)))
        x = maxpool(lrn(self.conv2(self.conv2_reduce(x))))
        for name in self.names:
            x = getattr(self, name)(x)
        if self.hidden is None:
            x = self.fc(x.mean((2, 3)))
        else:
            x = self.fc2(F.relu(self.fc1(x.flatten(1))))
        return l2_normalize(x)


class Tiny(nn.Module):
    def __init__(self, dim, widths=(32, 64, 128, 256)):
        super().__init__()
        cin, last = 3, len(widths) - 1
        for i, w in enumerate(widths):
            stage = nn.Module()
            convs = [("conv1", 2), ("conv2", 1)] if i == 0 else [("conv1", 1)] if i == last else [("conv1", 1), ("conv2", 1)]
            for name, s in convs:
                setattr(stage, name, Unit(cin, w, 3, s))
                cin = w
            stage.names = [n for n, _ in convs]
            setattr(self, f"stage{i}", stage)
        self.stages = len(widths)
        self.fc = nn.Linear(cin, dim)
        self.bn = nn.BatchNorm1d(dim)

    def forward(self, x):
        for i in range(self.stages):
            stage = getattr(self, f"stage{i}")
            for name in stage.names:
                x = getattr(stage, name)(x)
            if i != self.stages - 1:
                x = maxpool(x)
        return l2_normalize(self.bn(self.fc(x.mean((2, 3)))))


# Inception-ResNet-v1 with facenet-pytorch's state_dict names.
def basic(cin, cout, k, s=1, p=0):
    return Unit(cin, cout, k, s, p, eps=1e-3)


class Residual(nn.Module):
    def __init__(self, cin, branches, scale, relu=True):
        super().__init__()
        total = 0
        for i, layers in enumerate(branches):
            mods = [basic(*layer) for layer in layers]
            setattr(self, f"branch{i}", mods[0] if len(mods) == 1 else nn.Sequential(*mods))
            total += layers[-1][1]
        self.n = len(branches)
        self.conv2d = nn.Conv2d(total, cin, 1)
        self.scale, self.relu = scale, relu

    def forward(self, x):
        out = torch.cat([getattr(self, f"branch{i}")(x) for i in range(self.n)], 1)
        out = self.conv2d(out) * self.scale + x
        return F.relu(out) if self.relu else out


def block35(scale):
    return Residual(256, [[(256, 32, 1)], [(256, 32, 1), (32, 32, 3, 1, 1)],
                          [(256, 32, 1), (32, 32, 3, 1, 1), (32, 32, 3, 1, 1)]], scale)


def block17(scale):
    return Residual(896, [[(896, 128, 1)], [(896, 128, 1), (128, 128, (1, 7), 1, (0, 3)),
                                            (128, 128, (7, 1), 1, (3, 0))]], scale)


def block8(scale, relu=True):
    return Residual(1792, [[(1792, 192, 1)], [(1792, 192, 1), (192, 192, (1, 3), 1, (0, 1)),
                                              (192, 192, (3, 1), 1, (1, 0))]], scale, relu)


class Reduction(nn.Module):
    def __init__(self, branches):
        super().__init__()
        for i, layers in enumerate(branches):
            mods = [basic(*layer) for layer in layers]
            setattr(self, f"branch{i}", mods[0] if len(mods) == 1 else nn.Sequential(*mods))
        self.n = len(branches)

    def forward(self, x):
        out = [getattr(self, f"branch{i}")(x) for i in range(self.n)]
        return torch.cat(out + [F.max_pool2d(x, 3, 2)], 1)


class InceptionResnetV1(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.conv2d_1a = basic(3, 32, 3, 2)
        self.conv2d_2a = basic(32, 32, 3)
        self.conv2d_2b = basic(32, 64, 3, 1, 1)
        self.conv2d_3b = basic(64, 80, 1)
        self.conv2d_4a = basic(80, 192, 3)
        self.conv2d_4b = basic(192, 256, 3, 2)
        self.repeat_1 = nn.Sequential(*[block35(0.17) for _ in range(5)])
        self.mixed_6a = Reduction([[(256, 384, 3, 2)], [(256, 192, 1), (192, 192, 3, 1, 1), (192, 256, 3, 2)]])
        self.repeat_2 = nn.Sequential(*[block17(0.10) for _ in range(10)])
        self.mixed_7a = Reduction([[(896, 256, 1), (256, 384, 3, 2)], [(896, 256, 1), (256, 256, 3, 2)],
                                   [(896, 256, 1), (256, 256, 3, 1, 1), (256, 256, 3, 2)]])
        self.repeat_3 = nn.Sequential(*[block8(0.20) for _ in range(5)])
        self.block8 = block8(1.0, relu=False)
        self.last_linear = nn.Linear(1792, dim, bias=False)
        self.last_bn = nn.BatchNorm1d(dim, eps=1e-3, momentum=0.1)

    def forward(self, x):
        x = self.conv2d_2b(self.conv2d_2a(self.conv2d_1a(x)))
        x = F.max_pool2d(x, 3, 2)
        x = self.conv2d_4b(self.conv2d_4a(self.conv2d_3b(x)))
        x = self.mixed_6a(self.repeat_1(x))
        x = self.mixed_7a(self.repeat_2(x))
        x = self.block8(self.repeat_3(x))
        x = F.dropout(x.mean((2, 3)), 0.6, self.training)
        return l2_normalize(self.last_bn(self.last_linear(x)))



# insightface's iresnet (ArcFace's IR-18/34/50), written from its published layer list:
# the state_dict names are insightface's.
class IBasicBlock(nn.Module):
    def __init__(self, cin, planes, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=1e-5)
        self.conv1 = nn.Conv2d(cin, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-5)
        self.prelu = nn.PReLU(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-5)
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes, 1, stride, bias=False), nn.BatchNorm2d(planes, eps=1e-5))

    def forward(self, x):
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class IResNet(nn.Module):
    def __init__(self, layers, dim):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        cin = 64
        for i, (count, planes) in enumerate(zip(layers, (64, 128, 256, 512))):
            blocks = []
            for k in range(count):
                blocks.append(IBasicBlock(cin, planes, 2 if k == 0 else 1))
                cin = planes
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
        self.fc = nn.Linear(512 * 7 * 7, dim)
        self.features = nn.BatchNorm1d(dim, eps=1e-5)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False

    def forward(self, x):
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return l2_normalize(self.features(self.fc(torch.flatten(self.bn2(x), 1))))

IRESNET_LAYERS = {"iresnet18": (2, 2, 2, 2), "iresnet34": (3, 4, 6, 3), "iresnet50": (3, 4, 14, 3)}


def build(arch, dim=128):
    if arch == "tiny":
        return Tiny(dim)
    if arch == "nn1":
        return Nn1(dim)
    if arch == "nn1-paper":
        return Nn1Paper(dim)
    if arch in ("nn2", "nn3", "nn4", "nns1", "nns2"):
        return InceptionNet(arch, dim)
    if arch == "inception-resnet-v1":
        return InceptionResnetV1(dim)
    if arch in IRESNET_LAYERS:
        return IResNet(IRESNET_LAYERS[arch], dim)
    raise ValueError(f"unknown arch {arch}")


def normalize(pixels, kind):
    """N×H×W×3 uint8/float in 0..255 → N×3×H×W float, as crates/facenet/src/preprocess.rs."""
    x = pixels.float().permute(0, 3, 1, 2).contiguous()
    if kind == "fixed":
        return (x - 127.5) / 128.0
    flat = x.view(x.shape[0], -1)
    mean = flat.mean(1, keepdim=True)
    std = flat.std(1, correction=0, keepdim=True).clamp_min(1.0 / math.sqrt(flat.shape[1]))
    return ((flat - mean) / std).view_as(x)


def autocast(device, precision):
    """torch.autocast in bfloat16 for "bf16", as facenet-torch's precision option."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16)


def bench(arch, batch, iters, threads, device="cpu", precision="fp32", pixel_kind="uint8"):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build(arch).eval().to(device)
    h, w = INPUT[arch]
    # Pixels start on the CPU as uint8, like the images facenet-torch's embed() takes, and
    # embeddings come back to the CPU, so both sides time the same work.
    pixels = torch.randint(0, 256, (batch, h, w, 3), dtype=torch.uint8)
    if pixel_kind == "float32":
        pixels = pixels.float()

    def step():
        with autocast(device, precision):
            embeddings = model(normalize(pixels.to(device), "fixed"))
        return embeddings.float().cpu()

    seconds = []
    with torch.inference_mode():
        step()  # warm-up
        for _ in range(iters):
            start = time.perf_counter()
            step()
            seconds.append(time.perf_counter() - start)
    best = sorted(seconds)[len(seconds) // 2]
    return {"arch": arch, "imagesPerSecond": batch / best, "seconds": seconds}


if __name__ == "__main__":
    arch, batch, iters, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    device = sys.argv[5] if len(sys.argv) > 5 else "cpu"
    precision = sys.argv[6] if len(sys.argv) > 6 else "fp32"
    pixel_kind = sys.argv[7] if len(sys.argv) > 7 else "uint8"
    print(json.dumps(bench(arch, batch, iters, threads, device, precision, pixel_kind)))
