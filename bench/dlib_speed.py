"""dlib-bin's descriptor speed on the chips bench/dlib-speed.ts writes, for its ratio table.

    python bench/dlib_speed.py CHIPS.u8 COUNT REPEATS

Times `face_recognition_model_v1.compute_face_descriptor` on a list of COUNT 150×150 chips
(dlib's batch path, 16 chips per forward pass) and on single chips, best of REPEATS.
Prints JSON { batched, single } in images/s.
"""
import json
import os
import sys
import time

import dlib
import numpy as np

ROOT = os.path.join(os.path.dirname(__file__), "..")


def best(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(chips_file, count, repeats):
    count, repeats = int(count), int(repeats)
    net = dlib.face_recognition_model_v1(os.path.join(ROOT, ".libtorch", "dlib-models", "dlib_face_recognition_resnet_model_v1.dat"))
    chips = np.fromfile(chips_file, dtype=np.uint8).reshape(-1, 150, 150, 3)[:count]
    batch = [np.ascontiguousarray(c) for c in chips]
    net.compute_face_descriptor(batch[:2])  # warm-up
    batched = best(lambda: net.compute_face_descriptor(batch), repeats)
    single = best(lambda: [net.compute_face_descriptor(c) for c in batch[:16]], repeats)
    print(json.dumps({"batched": count / batched, "single": 16 / single, "dlib": dlib.__version__, "blas": bool(getattr(dlib, "DLIB_USE_BLAS", False))}))


if __name__ == "__main__":
    main(*sys.argv[1:])
