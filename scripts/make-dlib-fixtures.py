#!/usr/bin/env python3
"""Makes the dlib parity fixtures of __test__/dlib.spec.ts with dlib-bin (the reference
runtime; dev only): 150×150 face chips and dlib's descriptors of them.

  - 8 real chips: LFW photos shipped in data/lfw (8 identities), cut by dlib's own pipeline
    (HOG detector, 5-point shape predictor, get_face_chip(shape, 150, 0.25));
  - 4 seeded random chips (uniform 0..255, numpy seed 2026).

Writes __test__/fixtures/dlib/chips.u8 (N×150×150×3 uint8, row-major) and
__test__/fixtures/dlib/descriptors.json ({ files, descriptors: N×128 }), the descriptors of
`face_recognition_model_v1.compute_face_descriptor(chip)`.

  ~/.cache/facenet-torch/torch-2.11.0/bin/python scripts/make-dlib-fixtures.py
"""
import json
import os

import dlib
import numpy as np
from PIL import Image

ROOT = os.path.join(os.path.dirname(__file__), "..")
MODELS = os.path.join(ROOT, ".libtorch", "dlib-models")
OUT = os.path.join(ROOT, "__test__", "fixtures", "dlib")
PHOTOS = [
    "Aaron_Eckhart/Aaron_Eckhart_0001.jpg",
    "Abdullah_Gul/Abdullah_Gul_0001.jpg",
    "Angelina_Jolie/Angelina_Jolie_0001.jpg",
    "Serena_Williams/Serena_Williams_0001.jpg",
    "Colin_Powell/Colin_Powell_0040.jpg",
    "Kofi_Annan/Kofi_Annan_0008.jpg",
    "Gloria_Macapagal_Arroyo/Gloria_Macapagal_Arroyo_0003.jpg",
    "Yao_Ming/Yao_Ming_0002.jpg",
]


def main():
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(os.path.join(MODELS, "shape_predictor_5_face_landmarks.dat"))
    net = dlib.face_recognition_model_v1(os.path.join(MODELS, "dlib_face_recognition_resnet_model_v1.dat"))
    chips, names = [], []
    for photo in PHOTOS:
        img = np.asarray(Image.open(os.path.join(ROOT, "data", "lfw", photo)).convert("RGB"))
        faces = detector(img, 1)
        assert faces, f"dlib finds no face in {photo}"
        chips.append(dlib.get_face_chip(img, predictor(img, faces[0]), 150, 0.25))
        names.append(photo)
    rng = np.random.default_rng(2026)
    for i in range(4):
        chips.append(rng.integers(0, 256, (150, 150, 3), dtype=np.uint8))
        names.append(f"random-{i}")
    chips = np.ascontiguousarray(np.stack(chips))
    descriptors = [list(net.compute_face_descriptor(c)) for c in chips]
    os.makedirs(OUT, exist_ok=True)
    chips.tofile(os.path.join(OUT, "chips.u8"))
    with open(os.path.join(OUT, "descriptors.json"), "w") as f:
        json.dump({"dlib": dlib.__version__, "files": names, "descriptors": descriptors}, f)
    print(f"{len(chips)} chips and descriptors → {OUT}")


if __name__ == "__main__":
    main()
