"""dlib's own pipeline on every shipped LFW photo (data/lfw), with dlib-bin: the HOG face
detector, the 5-point shape predictor, `get_face_chip_details(shape, 150, 0.25)`, the chip,
and `compute_face_descriptor` of the ResNet. The reference the LFW row, the chip comparison
and the template fit of `alignFaces(…, { mode: 'dlib' })` are measured against.

    ~/.cache/facenet-torch/torch-2.11.0/bin/python bench/dlib_lfw.py [OUT_DIR] [--limit N]

OUT_DIR (default bench/.cache/dlib-lfw) gets:
  files.json       the photos, in order (sorted, as LfwPairs.imagePaths() relative to data/lfw)
  shapes.json      per photo: dlib's 5 points, its detection, and whether the detector found
                   none (then the whole photo is the face rectangle, as is common for LFW)
  chips.npy        N×150×150×3 uint8, dlib's chips
  descriptors.npy  N×128 float32, dlib's descriptors of those chips
Takes the models from the cache `npm install` fills (.libtorch/dlib-models).
"""
import json
import os
import sys
import time

import dlib
import numpy as np
from PIL import Image

ROOT = os.path.join(os.path.dirname(__file__), "..")
MODELS = os.path.join(ROOT, ".libtorch", "dlib-models")


def lfw_files():
    root = os.path.join(ROOT, "data", "lfw")
    lines = open(os.path.join(root, "pairs.txt")).read().split("\n")[1:]
    files = set()
    for line in lines:
        p = line.split()
        if len(p) == 3:
            files |= {f"{p[0]}/{p[0]}_{int(p[1]):04d}.jpg", f"{p[0]}/{p[0]}_{int(p[2]):04d}.jpg"}
        elif len(p) == 4:
            files |= {f"{p[0]}/{p[0]}_{int(p[1]):04d}.jpg", f"{p[2]}/{p[2]}_{int(p[3]):04d}.jpg"}
    return sorted(files)


def main():
    args = sys.argv[1:]
    limit = None
    if "--limit" in args:
        i = args.index("--limit")
        limit = int(args[i + 1])
        del args[i : i + 2]
    out = args[0] if args else os.path.join(ROOT, "bench", ".cache", "dlib-lfw")
    os.makedirs(out, exist_ok=True)
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(os.path.join(MODELS, "shape_predictor_5_face_landmarks.dat"))
    net = dlib.face_recognition_model_v1(os.path.join(MODELS, "dlib_face_recognition_resnet_model_v1.dat"))
    files = lfw_files()[:limit]
    shapes, chips, descriptors = {}, [], []
    started = time.time()
    for n, f in enumerate(files):
        img = np.asarray(Image.open(os.path.join(ROOT, "data", "lfw", f)).convert("RGB"))
        dets = detector(img, 1)
        fallback = len(dets) == 0
        if fallback:
            rect = dlib.rectangle(0, 0, img.shape[1] - 1, img.shape[0] - 1)
        else:
            # The detection nearest the photo's centre: LFW photos are centred on their person.
            cy, cx = img.shape[0] / 2, img.shape[1] / 2
            rect = min(dets, key=lambda d: (d.center().x - cx) ** 2 + (d.center().y - cy) ** 2)
        shape = predictor(img, rect)
        chip = dlib.get_face_chip(img, shape, 150, 0.25)
        chips.append(chip)
        descriptors.append(np.asarray(net.compute_face_descriptor(chip), dtype=np.float32))
        shapes[f] = {
            "points": [[shape.part(i).x, shape.part(i).y] for i in range(5)],
            "rect": [rect.left(), rect.top(), rect.right(), rect.bottom()],
            "fallback": fallback,
        }
        if (n + 1) % 200 == 0:
            print(f"{n + 1}/{len(files)} photos, {time.time() - started:.0f} s", file=sys.stderr, flush=True)
    seconds = time.time() - started
    json.dump(files, open(os.path.join(out, "files.json"), "w"))
    json.dump(shapes, open(os.path.join(out, "shapes.json"), "w"))
    np.save(os.path.join(out, "chips.npy"), np.stack(chips))
    np.save(os.path.join(out, "descriptors.npy"), np.stack(descriptors))
    print(json.dumps({"photos": len(files), "noDetection": sum(s["fallback"] for s in shapes.values()), "seconds": round(seconds, 1), "photosPerSecond": round(len(files) / seconds, 2)}))


if __name__ == "__main__":
    main()
