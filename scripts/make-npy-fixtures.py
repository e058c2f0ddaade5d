"""Writes the small .npy fixtures of __test__/fixtures/npy with numpy itself, so that the
TS parser is tested against files numpy really produces, not only against its own output.

Run: $(cat .libtorch/python) scripts/make-npy-fixtures.py
"""
import os

import numpy as np

OUT = os.path.join(os.path.dirname(__file__), "..", "__test__", "fixtures", "npy")
os.makedirs(OUT, exist_ok=True)

# 5 images of 4x6 (H x W) RGB with distinct, position-coded pixel values, so a wrong
# axis order shows up as different bytes.
n, h, w = 5, 4, 6
idx = np.arange(n * h * w * 3).reshape(n, h, w, 3)
images = ((idx * 7) % 251).astype(np.uint8)
names = np.array(["Alice", "Bob", "Alice", "Zoë", "Bob"])  # dtype <U5, non-ASCII on purpose

np.save(os.path.join(OUT, "images_u8.npy"), images)
np.save(os.path.join(OUT, "images_u8_fortran.npy"), np.asfortranarray(images))
np.save(os.path.join(OUT, "images_f32.npy"), images.astype(np.float32))
np.save(os.path.join(OUT, "images_f64_fortran.npy"), np.asfortranarray(images.astype(np.float64)))
np.save(os.path.join(OUT, "names.npy"), names)
np.save(os.path.join(OUT, "names_short.npy"), names[:4])
np.save(os.path.join(OUT, "images_bad_shape.npy"), images[..., :2].copy())
np.save(os.path.join(OUT, "images_i16.npy"), images.astype(np.int16))
np.save(os.path.join(OUT, "names_object.npy"), names.astype(object), allow_pickle=True)
# The expected pixels, flattened in C order, for the tests to compare against.
images.tofile(os.path.join(OUT, "expected_u8.bin"))
assert np.load(os.path.join(OUT, "images_u8_fortran.npy")).flags.f_contiguous
print("wrote", sorted(os.listdir(OUT)))
