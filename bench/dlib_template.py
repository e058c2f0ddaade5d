"""Fits the five-point template of `alignFaces(…, { mode: 'dlib' })` (DLIB_TEMPLATE in
crates/facenet/src/align.rs): where this library's MTCNN landmarks fall in the 150×150 chip
dlib cuts from its own 5-point shape predictor, averaged over the LFW photos of the
identities of View 2 folds 1–9 (fold 10 is left out of the fit).

    npx tsx bench/lfw-detections.ts                        # our MTCNN → bench/.cache/lfw-ours-mtcnn.json
    ~/.cache/facenet-torch/torch-2.11.0/bin/python bench/dlib_lfw.py       # dlib → bench/.cache/dlib-lfw/
    ~/.cache/facenet-torch/torch-2.11.0/bin/python bench/dlib_template.py  # prints the template

dlib's chip transform is rebuilt as get_face_chip_details does it: the least-squares
similarity from its 5-point template (padding 0.25, size 150) onto the predicted points.
Prints the template and, per fold group, how far (chip pixels) the similarity fitted from
MTCNN's landmarks onto the template moves dlib's own template points.
"""
import json
import os
import sys

import numpy as np

ROOT = os.path.join(os.path.dirname(__file__), "..")
CACHE = os.path.join(ROOT, "bench", ".cache")
# dlib's get_face_chip_details: the 5-point model's template (x, y in [0, 1]).
DLIB5 = np.array([
    [0.8595674595992, 0.2134981538014],
    [0.6460604764104, 0.2289674387677],
    [0.1205750620789, 0.2137274526848],
    [0.3340850613712, 0.2290642403242],
    [0.4901123135679, 0.6277975316475],
])
SIZE, PADDING = 150, 0.25


def similarity(src, dst):
    """Least-squares similarity src → dst as a complex z and t (dst ≈ z·src + t)."""
    s = src[:, 0] + 1j * src[:, 1]
    d = dst[:, 0] + 1j * dst[:, 1]
    ms, md = s.mean(), d.mean()
    z = np.sum(np.conj(s - ms) * (d - md)) / np.sum(np.abs(s - ms) ** 2)
    return z, md - z * ms


def apply(zt, p):
    z, t = zt
    q = z * (p[:, 0] + 1j * p[:, 1]) + t
    return np.stack([q.real, q.imag], axis=1)


def inverse(zt):
    z, t = zt
    return 1 / z, -t / z


def fold_identities():
    lines = open(os.path.join(ROOT, "data", "lfw", "pairs.txt")).read().split("\n")[1:]
    folds = [set() for _ in range(10)]
    pairs = [l.split() for l in lines if len(l.split()) in (3, 4)]
    for i, p in enumerate(pairs):
        folds[i // 600] |= {p[0]} if len(p) == 3 else {p[0], p[2]}
    return folds


def main():
    ours = json.load(open(os.path.join(CACHE, "lfw-ours-mtcnn.json")))
    shapes = json.load(open(os.path.join(CACHE, "dlib-lfw", "shapes.json")))
    chip_template = (PADDING + DLIB5) / (2 * PADDING + 1) * SIZE
    test = fold_identities()[9]
    mapped = {"train": [], "test": []}
    for f, s in shapes.items():
        faces = ours.get(f) or []
        if not faces or s["fallback"]:
            continue
        l, t, r, b = s["rect"]
        cx, cy = (l + r) / 2, (t + b) / 2
        face = min(faces, key=lambda q: ((q["box"][0] + q["box"][2]) / 2 - cx) ** 2 + ((q["box"][1] + q["box"][3]) / 2 - cy) ** 2)
        chip_to_image = similarity(chip_template, np.array(s["points"], float))
        landmarks = np.array(face["landmarks"], float)
        group = "test" if f.split("/")[0] in test else "train"
        mapped[group].append((apply(inverse(chip_to_image), landmarks), landmarks, chip_to_image))
    template = np.mean([m[0] for m in mapped["train"]], axis=0)
    report = {"template": np.round(template, 4).tolist(), "photos": {g: len(v) for g, v in mapped.items()}}
    for group, items in mapped.items():
        # Where the similarity fitted from MTCNN onto the template sends the image points
        # that dlib's own transform sends onto dlib's template: the chip's misplacement.
        errors = []
        for _, landmarks, chip_to_image in items:
            ours_to_chip = similarity(landmarks, template)
            dlib_points = apply(chip_to_image, chip_template)
            errors.append(np.linalg.norm(apply(ours_to_chip, dlib_points) - chip_template, axis=1).mean())
        errors = np.array(errors)
        report[f"{group}PointError"] = {"mean": round(float(errors.mean()), 3), "median": round(float(np.median(errors)), 3), "p95": round(float(np.percentile(errors, 95)), 3)}
    print(json.dumps(report))
    print("pub const DLIB_TEMPLATE: [[f64; 2]; 5] = [", file=sys.stderr)
    for x, y in template:
        print(f"    [{x:.4f}, {y:.4f}],", file=sys.stderr)
    print("];", file=sys.stderr)


if __name__ == "__main__":
    main()
