//! Cutting faces out of photos, given what a detector found: a 5-point similarity warp onto
//! the standard template, or facenet-pytorch's box-plus-margin crop.
//!
//! Pixel coordinates follow OpenCV and MTCNN: the centre of pixel (column i, row j) is the
//! point (i, j), so a W-wide image spans x ∈ [−0.5, W − 0.5].

use crate::error::{Error, Result};
use std::collections::BTreeMap;
use tch::{Device, Kind, Tensor};

/// Side of the image the five-point template is drawn in.
pub const TEMPLATE_SIZE: f64 = 112.0;

/// The five-point template of ArcFace/insightface in a 112×112 crop: left eye, right eye,
/// nose tip, left and right mouth corner (x, y), as seen by the viewer.
pub const TEMPLATE: [[f64; 2]; 5] = [
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
];

/// The template scaled uniformly to an `size`×`size` crop: every coordinate times
/// size/112, as insightface's `estimate_norm` does for other sizes.
pub fn template(size: i64) -> [[f64; 2]; 5] {
    let k = size as f64 / TEMPLATE_SIZE;
    TEMPLATE.map(|[x, y]| [x * k, y * k])
}

/// Side of the chip [`DLIB_TEMPLATE`] is drawn in: dlib's face chips are 150×150.
pub const DLIB_CHIP_SIZE: f64 = 150.0;

/// Where MTCNN's five landmarks (left eye, right eye, nose tip, mouth corners) fall in the
/// 150×150 chip that dlib's `get_face_chip_details(shape, 150, 0.25)` cuts from its own
/// 5-point shape predictor (eye corners and nose base): the mean, over the 6,856 LFW photos
/// of folds 1–9's identities, of this library's MTCNN landmarks mapped into dlib's chip of
/// the same photo (`bench/dlib_template.py`). A similarity onto it reproduces dlib's chip from
/// MTCNN to 2.9 chip pixels on average (fold 10's photos). Fitting on the eyes and nose alone
/// (2.6 px) and an optimized template (2.8 px) gave no better LFW accuracy (bench/RESULTS.md).
pub const DLIB_TEMPLATE: [[f64; 2]; 5] = [
    [48.1940, 46.6732],
    [102.7846, 46.6412],
    [75.2187, 78.8174],
    [51.2018, 106.2260],
    [99.4804, 106.3218],
];

/// [`DLIB_TEMPLATE`] for a `size`×`size` chip.
pub fn dlib_template(size: i64) -> [[f64; 2]; 5] {
    let k = size as f64 / DLIB_CHIP_SIZE;
    DLIB_TEMPLATE.map(|[x, y]| [x * k, y * k])
}

/// A similarity transform (rotation, uniform scale, translation; never a reflection):
/// p ↦ [[a, −b], [b, a]]·p + t, i.e. scale √(a²+b²), angle atan2(b, a).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Similarity {
    pub a: f64,
    pub b: f64,
    pub tx: f64,
    pub ty: f64,
}

impl Similarity {
    /// The similarity with this scale, angle (radians, counter-clockwise in a y-up frame;
    /// clockwise on screen, where y points down) and translation.
    pub fn new(scale: f64, angle: f64, tx: f64, ty: f64) -> Self {
        Self {
            a: scale * angle.cos(),
            b: scale * angle.sin(),
            tx,
            ty,
        }
    }

    /// The least-squares similarity taking `src` onto `dst` (Umeyama 1991 with the
    /// reflection excluded). In 2-D that problem is linear: writing points as complex
    /// numbers, it fits dst ≈ z·src + t, whose solution about the centroids is
    /// z = Σ conj(s)·d / Σ |s|²; Umeyama's SVD gives the same z when det ≥ 0 is enforced.
    pub fn estimate(src: &[[f64; 2]], dst: &[[f64; 2]]) -> Result<Self> {
        if src.len() != dst.len() || src.len() < 2 {
            return Err(Error::invalid(format!(
                "a similarity needs at least 2 matching points, got {} and {}",
                src.len(),
                dst.len()
            )));
        }
        if src.iter().chain(dst).flatten().any(|v| !v.is_finite()) {
            return Err(Error::invalid("landmarks must be finite numbers"));
        }
        let n = src.len() as f64;
        let mean = |points: &[[f64; 2]]| {
            let [sx, sy] = points
                .iter()
                .fold([0.0, 0.0], |[x, y], p| [x + p[0], y + p[1]]);
            [sx / n, sy / n]
        };
        let [msx, msy] = mean(src);
        let [mdx, mdy] = mean(dst);
        let (mut dot, mut cross, mut norm) = (0.0, 0.0, 0.0);
        for (s, d) in src.iter().zip(dst) {
            let (sx, sy) = (s[0] - msx, s[1] - msy);
            let (dx, dy) = (d[0] - mdx, d[1] - mdy);
            dot += sx * dx + sy * dy;
            cross += sx * dy - sy * dx;
            norm += sx * sx + sy * sy;
        }
        // Landmarks that all coincide (to well under a thousandth of a pixel) fix no scale.
        if norm < 1e-6 {
            return Err(Error::invalid(
                "the landmarks all lie at one point; they fix no alignment",
            ));
        }
        let (a, b) = (dot / norm, cross / norm);
        Ok(Self {
            a,
            b,
            tx: mdx - (a * msx - b * msy),
            ty: mdy - (b * msx + a * msy),
        })
    }

    pub fn apply(&self, [x, y]: [f64; 2]) -> [f64; 2] {
        [
            self.a * x - self.b * y + self.tx,
            self.b * x + self.a * y + self.ty,
        ]
    }

    pub fn scale(&self) -> f64 {
        self.a.hypot(self.b)
    }

    pub fn angle(&self) -> f64 {
        self.b.atan2(self.a)
    }

    /// The inverse similarity; `None` when the scale is zero.
    pub fn inverse(&self) -> Option<Self> {
        let s2 = self.a * self.a + self.b * self.b;
        if !(s2 > 0.0 && s2.is_finite()) {
            return None;
        }
        let (a, b) = (self.a / s2, -self.b / s2);
        Some(Self {
            a,
            b,
            tx: -(a * self.tx - b * self.ty),
            ty: -(b * self.tx + a * self.ty),
        })
    }
}

/// How a face is cut out of its photo.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AlignMode {
    /// The similarity that best maps the 5 landmarks onto [`template`], warped with
    /// bilinear sampling; pixels from outside the photo are black.
    Template,
    /// facenet-pytorch's `extract_face`: the box grown by `margin` pixels *of the output
    /// crop* (split over both sides), rounded down to whole pixels, clipped to the photo and
    /// resized to the crop size by area averaging (its tensor path), truncated to uint8.
    /// facenet-pytorch's default is `margin = 0` at size 160.
    Margin { margin: f64 },
    /// The chip dlib's face-recognition ResNet expects: the similarity onto
    /// [`DLIB_TEMPLATE`], and, as dlib's `extract_image_chips` does, the photo first halved
    /// (2×2 means, for dlib's Gaussian pyramid) while the face would shrink below half its size.
    Dlib,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AlignOptions {
    /// Side of the square crop in pixels. Default 160 (facenet-pytorch's `image_size`).
    pub size: i64,
    pub mode: AlignMode,
}

impl Default for AlignOptions {
    fn default() -> Self {
        Self {
            size: 160,
            mode: AlignMode::Template,
        }
    }
}

/// One face to cut out: the index of its photo, and its box and landmarks in that photo's
/// pixels (as a detector reports them).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaceRef {
    pub image: usize,
    /// x1, y1, x2, y2.
    pub bbox: [f32; 4],
    /// Left eye, right eye, nose, mouth left, mouth right (x, y).
    pub landmarks: [[f32; 2]; 5],
}

const MAX_SIZE: i64 = 4096;

/// Cuts `faces` out of `images` (each H×W×3 uint8 RGB, any device, any sizes) as an
/// N×S×S×3 uint8 CPU tensor, row i being `faces[i]`. The warps run on `device`: in template
/// mode the faces of all photos of one size go through one `affine_grid` + `grid_sample`.
pub fn align(
    images: &[Tensor],
    faces: &[FaceRef],
    options: &AlignOptions,
    device: Device,
) -> Result<Tensor> {
    let size = options.size;
    if !(1..=MAX_SIZE).contains(&size) {
        return Err(Error::invalid(format!(
            "the crop size must be 1..{MAX_SIZE} pixels, got {size}"
        )));
    }
    for (i, image) in images.iter().enumerate() {
        check_image(image, i)?;
    }
    for (i, face) in faces.iter().enumerate() {
        if face.image >= images.len() {
            return Err(Error::invalid(format!(
                "face {i} refers to image {} but there are {} image(s)",
                face.image,
                images.len()
            )));
        }
    }
    let _no_grad = tch::no_grad_guard();
    if faces.is_empty() {
        return Ok(Tensor::f_zeros(
            [0, size, size, 3],
            (Kind::Uint8, Device::Cpu),
        )?);
    }
    match options.mode {
        AlignMode::Template => warp_template(images, faces, size, device, false),
        AlignMode::Dlib => warp_template(images, faces, size, device, true),
        AlignMode::Margin { margin } => {
            if !(margin.is_finite() && margin >= 0.0 && margin < size as f64) {
                return Err(Error::invalid(format!(
                    "margin must be at least 0 and below the crop size {size}, got {margin}"
                )));
            }
            let crops = faces
                .iter()
                .map(|face| crop_margin(&images[face.image], face.bbox, size, margin, device))
                .collect::<Result<Vec<_>>>()?;
            Ok(Tensor::f_stack(&crops, 0)?)
        }
    }
}

fn check_image(image: &Tensor, index: usize) -> Result<()> {
    let shape = image.size();
    if shape.len() != 3 || shape[2] != 3 || shape[0] < 1 || shape[1] < 1 {
        return Err(Error::shape(format!(
            "image {index} must be H×W×3 (RGB, channels last), got {shape:?}"
        )));
    }
    if image.kind() != Kind::Uint8 {
        return Err(Error::shape(format!(
            "image {index} must be uint8, got {:?}",
            image.kind()
        )));
    }
    Ok(())
}

/// The 2×3 `affine_grid` matrix that samples the input at M⁻¹(output pixel), where M is
/// the similarity from input pixels to output pixels. Both ends go through the
/// normalized [−1, 1] coordinates of `align_corners = false`: x_n = (2x + 1)/W − 1.
fn grid_theta(inverse: &Similarity, out: i64, height: i64, width: i64) -> [f64; 6] {
    let s = out as f64;
    let (w, h) = (width as f64, height as f64);
    // Output normalized → output pixel: u = (S/2)·u_n + (S − 1)/2.
    let (half, c) = (s / 2.0, (s - 1.0) / 2.0);
    let Similarity { a, b, tx, ty } = *inverse;
    // Input pixel x = a·u − b·v + tx, y = b·u + a·v + ty; then x_n = (2/W)·x + 1/W − 1.
    [
        2.0 / w * a * half,
        -2.0 / w * b * half,
        2.0 / w * (a * c - b * c + tx) + 1.0 / w - 1.0,
        2.0 / h * b * half,
        2.0 / h * a * half,
        2.0 / h * (b * c + a * c + ty) + 1.0 / h - 1.0,
    ]
}

/// The similarity from a face's landmarks onto the template of an `size` crop.
pub fn template_transform(landmarks: &[[f32; 2]; 5], size: i64) -> Result<Similarity> {
    let src = landmarks.map(|[x, y]| [f64::from(x), f64::from(y)]);
    Similarity::estimate(&src, &template(size))
}

/// The similarity from a face's landmarks onto [`DLIB_TEMPLATE`] of an `size` chip.
pub fn dlib_transform(landmarks: &[[f32; 2]; 5], size: i64) -> Result<Similarity> {
    let src = landmarks.map(|[x, y]| [f64::from(x), f64::from(y)]);
    Similarity::estimate(&src, &dlib_template(size))
}

/// How many times dlib's `extract_image_chips` halves a photo before sampling a chip whose
/// transform shrinks it by `scale` (chip pixels per photo pixel): while the face's
/// rectangle, halved once more, would still cover more pixels than the chip.
pub fn pyramid_levels(scale: f64) -> u32 {
    let mut levels = 0;
    while levels < 16 && scale * f64::from(1u32 << (levels + 1)) < 1.0 {
        levels += 1;
    }
    levels
}

/// `m` applied to a photo halved `levels` times by 2×2 means: a pixel q of the halved photo
/// is centred on 2q + ½ of the photo before.
fn through_pyramid(m: Similarity, levels: u32) -> Similarity {
    (0..levels).fold(m, |m, _| Similarity {
        a: 2.0 * m.a,
        b: 2.0 * m.b,
        tx: m.tx + 0.5 * (m.a - m.b),
        ty: m.ty + 0.5 * (m.b + m.a),
    })
}

fn warp_template(
    images: &[Tensor],
    faces: &[FaceRef],
    size: i64,
    device: Device,
    dlib: bool,
) -> Result<Tensor> {
    // Each face's transform onto the chip and the pyramid level of the photo it samples.
    let mut transforms = Vec::with_capacity(faces.len());
    for (i, face) in faces.iter().enumerate() {
        let fit = if dlib {
            dlib_transform(&face.landmarks, size)
        } else {
            template_transform(&face.landmarks, size)
        };
        let m = fit.map_err(|e| Error::invalid(format!("face {i}: {e}")))?;
        let levels = if dlib { pyramid_levels(m.scale()) } else { 0 };
        transforms.push((through_pyramid(m, levels), levels));
    }
    // The photos at the levels the faces need, each made once.
    let mut levels_of: BTreeMap<(usize, u32), Tensor> = BTreeMap::new();
    for (face, &(_, levels)) in faces.iter().zip(&transforms) {
        if levels > 0 && !levels_of.contains_key(&(face.image, levels)) {
            let mut photo = images[face.image]
                .f_to_device(device)?
                .f_permute([2, 0, 1])?
                .f_to_kind(Kind::Float)?;
            for _ in 0..levels {
                photo = photo.f_avg_pool2d([2, 2], [2, 2], [0, 0], false, true, None::<i64>)?;
            }
            let halved = photo
                .f_round()?
                .f_to_kind(Kind::Uint8)?
                .f_permute([1, 2, 0])?
                .f_contiguous()?;
            levels_of.insert((face.image, levels), halved);
        }
    }
    let photo_of = |i: usize| -> &Tensor {
        let (image, levels) = (faces[i].image, transforms[i].1);
        levels_of.get(&(image, levels)).unwrap_or(&images[image])
    };
    // Faces grouped by the size of the photo they sample: one warp per group, on a stack of
    // its photos.
    let mut groups: BTreeMap<(i64, i64), Vec<usize>> = BTreeMap::new();
    for i in 0..faces.len() {
        let shape = photo_of(i).size();
        groups.entry((shape[0], shape[1])).or_default().push(i);
    }
    let mut rows: Vec<Option<Tensor>> = (0..faces.len()).map(|_| None).collect();
    for ((height, width), members) in groups {
        let mut photo_slot: BTreeMap<(usize, u32), i64> = BTreeMap::new();
        let mut photos = Vec::new();
        let mut slots = Vec::with_capacity(members.len());
        let mut thetas = Vec::with_capacity(members.len() * 6);
        for &i in &members {
            let key = (faces[i].image, transforms[i].1);
            let slot = match photo_slot.entry(key) {
                std::collections::btree_map::Entry::Occupied(slot) => *slot.get(),
                std::collections::btree_map::Entry::Vacant(slot) => {
                    photos.push(photo_of(i).f_to_device(device)?);
                    *slot.insert(photos.len() as i64 - 1)
                }
            };
            slots.push(slot);
            let inverse = transforms[i]
                .0
                .inverse()
                .ok_or_else(|| Error::invalid(format!("face {i}: its landmarks have no extent")))?;
            thetas.extend(grid_theta(&inverse, size, height, width).map(|v| v as f32));
        }
        let n = members.len() as i64;
        let stack = Tensor::f_stack(&photos, 0)?
            .f_permute([0, 3, 1, 2])?
            .f_to_kind(Kind::Float)?;
        let per_face =
            stack.f_index_select(0, &Tensor::f_from_slice(&slots)?.f_to_device(device)?)?;
        let theta = Tensor::f_from_slice(&thetas)?
            .f_view([n, 2, 3])?
            .f_to_device(device)?;
        let grid = Tensor::f_affine_grid_generator(&theta, [n, 3, size, size], false)?;
        // interpolation 0 = bilinear, padding 0 = zeros.
        let warped = per_face.f_grid_sampler_2d(&grid, 0, 0, false)?;
        let pixels = warped
            .f_round()?
            .f_clamp(0.0, 255.0)?
            .f_to_kind(Kind::Uint8)?
            .f_permute([0, 2, 3, 1])?
            .f_to_device(Device::Cpu)?;
        for (row, &i) in members.iter().enumerate() {
            rows[i] = Some(pixels.f_get(row as i64)?);
        }
    }
    let rows: Vec<Tensor> = rows
        .into_iter()
        .map(|r| r.expect("every face is in a group"))
        .collect();
    Ok(Tensor::f_stack(&rows, 0)?.f_contiguous()?)
}

/// The pixel box facenet-pytorch's `extract_face` crops: x1, y1, x2, y2 (exclusive).
pub fn margin_box(bbox: [f32; 4], size: i64, margin: f64, height: i64, width: i64) -> [i64; 4] {
    let [x1, y1, x2, y2] = bbox.map(f64::from);
    let s = size as f64;
    let mx = margin * (x2 - x1) / (s - margin);
    let my = margin * (y2 - y1) / (s - margin);
    // Python's int() truncates toward zero; after the max(·, 0) the values are ≥ 0, so
    // truncation is the floor there.
    [
        (x1 - mx / 2.0).max(0.0).trunc() as i64,
        (y1 - my / 2.0).max(0.0).trunc() as i64,
        (x2 + mx / 2.0).min(width as f64).trunc() as i64,
        (y2 + my / 2.0).min(height as f64).trunc() as i64,
    ]
}

fn crop_margin(
    image: &Tensor,
    bbox: [f32; 4],
    size: i64,
    margin: f64,
    device: Device,
) -> Result<Tensor> {
    if bbox.iter().any(|v| !v.is_finite()) {
        return Err(Error::invalid(format!("face box {bbox:?} is not finite")));
    }
    let shape = image.size();
    let (height, width) = (shape[0], shape[1]);
    let [x1, y1, x2, y2] = margin_box(bbox, size, margin, height, width);
    if x2 <= x1 || y2 <= y1 {
        // A box outside the photo: nothing to resize, so the crop is black.
        return Ok(Tensor::f_zeros(
            [size, size, 3],
            (Kind::Uint8, Device::Cpu),
        )?);
    }
    let crop = image
        .f_narrow(0, y1, y2 - y1)?
        .f_narrow(1, x1, x2 - x1)?
        .f_to_device(device)?
        .f_permute([2, 0, 1])?
        .f_to_kind(Kind::Float)?
        .f_unsqueeze(0)?;
    // interpolate(mode="area") is adaptive average pooling; `.byte()` truncates.
    Ok(crop
        .f_adaptive_avg_pool2d([size, size])?
        .f_squeeze_dim(0)?
        .f_permute([1, 2, 0])?
        .f_to_kind(Kind::Uint8)?
        .f_to_device(Device::Cpu)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(p: [f64; 2], q: [f64; 2], tol: f64) -> bool {
        (p[0] - q[0]).abs() <= tol && (p[1] - q[1]).abs() <= tol
    }

    #[test]
    fn estimate_recovers_a_known_similarity_exactly() {
        let truth = Similarity::new(1.7, 0.35, -12.5, 40.25);
        let src = TEMPLATE;
        let dst = src.map(|p| truth.apply(p));
        let fit = Similarity::estimate(&src, &dst).unwrap();
        for (got, want) in [
            (fit.a, truth.a),
            (fit.b, truth.b),
            (fit.tx, truth.tx),
            (fit.ty, truth.ty),
        ] {
            assert!((got - want).abs() < 1e-9, "{fit:?} vs {truth:?}");
        }
        assert!((fit.scale() - 1.7).abs() < 1e-12);
        assert!((fit.angle() - 0.35).abs() < 1e-12);
    }

    #[test]
    fn template_points_map_onto_themselves() {
        for size in [112, 160, 96] {
            let t = template(size);
            let fit = Similarity::estimate(&t, &t).unwrap();
            assert!(
                (fit.a - 1.0).abs() < 1e-12 && fit.b.abs() < 1e-12,
                "{fit:?}"
            );
            for p in t {
                assert!(close(fit.apply(p), p, 1e-9));
            }
        }
        assert_eq!(template(112), TEMPLATE);
    }

    #[test]
    fn estimate_never_reflects() {
        // Mirrored landmarks (a left-right flip) have no exact similarity; the fit must stay
        // a rotation and scale, not turn into the mirror.
        let mirrored = TEMPLATE.map(|[x, y]| [112.0 - x, y]);
        let fit = Similarity::estimate(&mirrored, &TEMPLATE).unwrap();
        // A similarity matrix [[a, −b], [b, a]] has determinant a² + b² > 0.
        assert!(fit.a * fit.a + fit.b * fit.b > 0.0);
        let residual: f64 = mirrored
            .iter()
            .zip(&TEMPLATE)
            .map(|(s, d)| {
                let p = fit.apply(*s);
                (p[0] - d[0]).powi(2) + (p[1] - d[1]).powi(2)
            })
            .sum();
        assert!(residual > 1.0, "a mirror was fitted exactly: {fit:?}");
    }

    #[test]
    fn estimate_is_least_squares() {
        // Noisy points: the fit's residual is no larger than that of nearby similarities.
        let truth = Similarity::new(0.8, -0.2, 5.0, 7.0);
        let noise = [
            [0.3, -0.2],
            [-0.4, 0.1],
            [0.2, 0.5],
            [-0.1, -0.3],
            [0.0, 0.2],
        ];
        let src = TEMPLATE;
        let dst: Vec<[f64; 2]> = src
            .iter()
            .zip(noise)
            .map(|(p, n)| {
                let q = truth.apply(*p);
                [q[0] + n[0], q[1] + n[1]]
            })
            .collect();
        let fit = Similarity::estimate(&src, &dst).unwrap();
        let cost = |t: &Similarity| -> f64 {
            src.iter()
                .zip(&dst)
                .map(|(s, d)| {
                    let p = t.apply(*s);
                    (p[0] - d[0]).powi(2) + (p[1] - d[1]).powi(2)
                })
                .sum()
        };
        let best = cost(&fit);
        for delta in [1e-3, -1e-3] {
            for k in 0..4 {
                let mut t = fit;
                match k {
                    0 => t.a += delta,
                    1 => t.b += delta,
                    2 => t.tx += delta,
                    _ => t.ty += delta,
                }
                assert!(
                    cost(&t) > best,
                    "perturbing parameter {k} by {delta} lowered the cost"
                );
            }
        }
    }

    #[test]
    fn estimate_refuses_degenerate_landmarks() {
        let same = [[10.0, 10.0]; 5];
        assert!(Similarity::estimate(&same, &TEMPLATE).is_err());
        let nan = [[f64::NAN, 0.0]; 5];
        assert!(Similarity::estimate(&nan, &TEMPLATE).is_err());
    }

    #[test]
    fn inverse_undoes_the_transform() {
        let t = Similarity::new(2.5, 1.1, 3.0, -4.0);
        let inv = t.inverse().unwrap();
        for p in TEMPLATE {
            assert!(close(inv.apply(t.apply(p)), p, 1e-9));
        }
    }

    /// A 256×256 image whose red channel is x and green channel y (blue 77): bilinear
    /// sampling of a linear ramp is exact, so every warped pixel reveals where it was
    /// sampled.
    fn ramp() -> Tensor {
        let mut data = Vec::with_capacity(256 * 256 * 3);
        for y in 0..256u32 {
            for x in 0..256u32 {
                data.extend([x as u8, y as u8, 77]);
            }
        }
        Tensor::from_slice(&data).view([256, 256, 3])
    }

    fn pixel(t: &Tensor, n: i64, y: i64, x: i64) -> [u8; 3] {
        let v = Vec::<u8>::try_from(t.get(n).get(y).get(x)).unwrap();
        [v[0], v[1], v[2]]
    }

    #[test]
    fn warp_samples_the_photo_where_the_transform_says() {
        let image = ramp();
        let size = 160;
        // Landmarks of a face turned 20°, at 0.9× the template's scale, placed in the ramp.
        let place = Similarity::new(0.9, 20f64.to_radians(), 60.0, 40.0);
        let landmarks = template(size).map(|p| {
            let [x, y] = place.apply(p);
            [x as f32, y as f32]
        });
        let face = FaceRef {
            image: 0,
            bbox: [0.0; 4],
            landmarks,
        };
        let out = align(
            &[image],
            &[face],
            &AlignOptions {
                size,
                mode: AlignMode::Template,
            },
            Device::Cpu,
        )
        .unwrap();
        assert_eq!(out.size(), [1, size, size, 3]);
        assert_eq!(out.kind(), Kind::Uint8);
        let mut checked = 0;
        for v in (0..size).step_by(7) {
            for u in (0..size).step_by(7) {
                let [x, y] = place.apply([u as f64, v as f64]);
                let got = pixel(&out, 0, v, u);
                if (0.0..=255.0).contains(&x) && (0.0..=255.0).contains(&y) {
                    // Rounded to uint8 after exact bilinear sampling: within half a level
                    // (float32 grid arithmetic adds a little).
                    assert!(
                        (f64::from(got[0]) - x).abs() <= 0.51,
                        "({u},{v}) → x {x}, got {got:?}"
                    );
                    assert!(
                        (f64::from(got[1]) - y).abs() <= 0.51,
                        "({u},{v}) → y {y}, got {got:?}"
                    );
                    assert_eq!(got[2], 77);
                    checked += 1;
                } else if x < -1.0 || y < -1.0 || x > 256.0 || y > 256.0 {
                    assert_eq!(got, [0, 0, 0], "outside the photo is black");
                }
            }
        }
        assert!(checked > 300, "only {checked} pixels checked");
    }

    #[test]
    fn landmarks_land_on_the_template() {
        // Bright dots at the landmarks of a rotated, scaled face in a black photo: after the
        // warp each dot's centre of mass sits on its template point.
        let (h, w) = (300i64, 400i64);
        let place = Similarity::new(1.6, -0.4, 120.0, 90.0);
        let size = 112;
        let points = template(size).map(|p| place.apply(p));
        let mut data = vec![0u8; (h * w * 3) as usize];
        for (k, [px, py]) in points.iter().enumerate() {
            for y in 0..h {
                for x in 0..w {
                    let d2 = (x as f64 - px).powi(2) + (y as f64 - py).powi(2);
                    if d2 < 36.0 {
                        data[((y * w + x) * 3 + (k % 3) as i64) as usize] = 255;
                    }
                }
            }
        }
        let image = Tensor::from_slice(&data).view([h, w, 3]);
        let landmarks = points.map(|[x, y]| [x as f32, y as f32]);
        let faces = [FaceRef {
            image: 0,
            bbox: [0.0; 4],
            landmarks,
        }];
        let out = align(
            &[image],
            &faces,
            &AlignOptions {
                size,
                mode: AlignMode::Template,
            },
            Device::Cpu,
        )
        .unwrap();
        let crop = Vec::<u8>::try_from(out.flatten(0, -1)).unwrap();
        for (k, [tx, ty]) in TEMPLATE.iter().enumerate() {
            let (mut sum, mut sx, mut sy) = (0.0, 0.0, 0.0);
            for y in 0..size {
                for x in 0..size {
                    if ((x as f64 - tx).powi(2) + (y as f64 - ty).powi(2)) > 64.0 {
                        continue;
                    }
                    let v = f64::from(crop[((y * size + x) * 3 + (k % 3) as i64) as usize]);
                    sum += v;
                    sx += v * x as f64;
                    sy += v * y as f64;
                }
            }
            assert!(sum > 0.0, "dot {k} vanished");
            let (cx, cy) = (sx / sum, sy / sum);
            assert!(
                close([cx, cy], [*tx, *ty], 0.25),
                "dot {k} at ({cx}, {cy}), template ({tx}, {ty})"
            );
        }
    }

    #[test]
    fn faces_of_photos_of_several_sizes_keep_their_order() {
        let big = ramp();
        let small = Tensor::full([50, 80, 3], 200, (Kind::Uint8, Device::Cpu));
        let t = template(64).map(|[x, y]| [x as f32 + 3.0, y as f32 + 5.0]);
        let scaled = template(64).map(|[x, y]| [x as f32 * 0.5, y as f32 * 0.5]);
        let faces = [
            FaceRef {
                image: 1,
                bbox: [0.0; 4],
                landmarks: scaled,
            },
            FaceRef {
                image: 0,
                bbox: [0.0; 4],
                landmarks: t,
            },
            FaceRef {
                image: 1,
                bbox: [0.0; 4],
                landmarks: scaled,
            },
        ];
        let options = AlignOptions {
            size: 64,
            mode: AlignMode::Template,
        };
        let out = align(&[big, small], &faces, &options, Device::Cpu).unwrap();
        assert_eq!(out.size(), [3, 64, 64, 3]);
        // Face 1 is the ramp shifted by (3, 5): pixel (u, v) holds (u + 3, v + 5).
        assert_eq!(pixel(&out, 1, 10, 20), [23, 15, 77]);
        // Faces 0 and 2 come from the uniform photo (at 2× zoom, inside it near the centre).
        assert_eq!(pixel(&out, 0, 20, 20), [200, 200, 200]);
        assert!(out.get(0).equal(&out.get(2)));
    }

    #[test]
    fn no_faces_give_an_empty_batch_and_bad_input_is_an_error() {
        let image = ramp();
        let options = AlignOptions::default();
        let out = align(std::slice::from_ref(&image), &[], &options, Device::Cpu).unwrap();
        assert_eq!(out.size(), [0, 160, 160, 3]);
        let face = FaceRef {
            image: 1,
            bbox: [0.0; 4],
            landmarks: [[0.0; 2]; 5],
        };
        assert!(align(std::slice::from_ref(&image), &[face], &options, Device::Cpu).is_err());
        let face = FaceRef { image: 0, ..face };
        let err = align(std::slice::from_ref(&image), &[face], &options, Device::Cpu).unwrap_err();
        assert!(err.to_string().contains("one point"), "{err}");
        let gray = Tensor::zeros([10, 10, 1], (Kind::Uint8, Device::Cpu));
        assert!(matches!(
            align(&[gray], &[], &options, Device::Cpu),
            Err(Error::Shape(_))
        ));
        let zero = AlignOptions { size: 0, ..options };
        assert!(align(&[image], &[], &zero, Device::Cpu).is_err());
    }

    #[test]
    fn margin_box_matches_facenet_pytorch_extract_face() {
        // extract_face(img, box=[10.7, 20.2, 90.9, 120.6], image_size=160, margin=20) on a
        // 100×110 (h×w) image: margin_x = 20·80.2/140, margin_y = 20·100.4/140.
        let b = margin_box([10.7, 20.2, 90.9, 120.6], 160, 20.0, 100, 110);
        let mx = 20.0 * (90.9f64 - 10.7) / 140.0;
        assert_eq!(b[0], (10.7f64 - mx / 2.0) as i64);
        assert_eq!(b[1], 13);
        assert_eq!(b[2], (90.9f64 + mx / 2.0) as i64);
        assert_eq!(b[3], 100, "clipped to the height");
        assert_eq!(
            margin_box([-5.0, -3.0, 20.0, 30.0], 160, 0.0, 100, 100),
            [0, 0, 20, 30]
        );
    }

    #[test]
    fn margin_crop_of_an_exact_size_box_is_the_box() {
        let image = ramp();
        let face = FaceRef {
            image: 0,
            bbox: [30.0, 40.0, 94.0, 104.0],
            landmarks: [[0.0; 2]; 5],
        };
        let options = AlignOptions {
            size: 64,
            mode: AlignMode::Margin { margin: 0.0 },
        };
        let out = align(std::slice::from_ref(&image), &[face], &options, Device::Cpu).unwrap();
        let want = image.narrow(0, 40, 64).narrow(1, 30, 64);
        assert!(out.get(0).equal(&want));
        // Halving: each output pixel is the mean of a 2×2 block, truncated.
        let face = FaceRef {
            bbox: [30.0, 40.0, 158.0, 168.0],
            ..face
        };
        let out = align(&[image], &[face], &options, Device::Cpu).unwrap();
        assert_eq!(
            pixel(&out, 0, 0, 0),
            [30, 40, 77],
            "mean of 30,31 is 30.5, truncated"
        );
        assert_eq!(pixel(&out, 0, 5, 7), [44, 50, 77]);
    }

    #[test]
    fn theta_is_the_identity_for_an_identity_transform() {
        let identity = Similarity::new(1.0, 0.0, 0.0, 0.0);
        let theta = grid_theta(&identity, 50, 50, 50);
        let want = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0];
        for (got, want) in theta.iter().zip(want) {
            assert!((got - want).abs() < 1e-12, "{theta:?}");
        }
    }
}
