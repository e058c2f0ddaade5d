//! Batched augmentation on the model's device: each image's random resized crop, flip and
//! rotation become one 2×3 affine matrix, the whole batch is resampled by one
//! `affine_grid` + `grid_sample`, and brightness is one multiply.
//!
//! The options and their meaning are those of the sharp path (`src/data/preprocess.ts`),
//! and the draws come from the same generator (sfc32 seeded by (seed, epoch, batch), in the
//! same order), so a packed run and a JPEG run of one seed crop, flip and rotate the same
//! way, and a resumed run draws exactly what the uninterrupted one drew. libtorch's global
//! generator is never touched.

use crate::error::{Error, Result};
use crate::model::InputSize;
use tch::{Device, Kind, Tensor};

/// Random augmentation; the names and defaults of the TS `AugmentOptions`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AugmentOptions {
    /// Crop side as a fraction of the image, drawn from [crop_scale, 1].
    pub crop_scale: f64,
    /// Horizontal flip with probability ½.
    pub flip: bool,
    /// Rotation drawn from [−max_rotation, max_rotation] degrees.
    pub max_rotation: f64,
    /// Brightness factor drawn from [1 − brightness, 1 + brightness].
    pub brightness: f64,
}

impl Default for AugmentOptions {
    fn default() -> Self {
        Self {
            crop_scale: 0.875,
            flip: true,
            max_rotation: 0.0,
            brightness: 0.0,
        }
    }
}

impl AugmentOptions {
    pub fn validate(&self) -> Result<()> {
        if !(self.crop_scale > 0.0 && self.crop_scale <= 1.0) {
            return Err(Error::invalid(format!(
                "augment.cropScale must be in (0, 1], got {}",
                self.crop_scale
            )));
        }
        if !(0.0..=45.0).contains(&self.max_rotation) {
            return Err(Error::invalid(format!(
                "augment.maxRotation must be 0..45 degrees, got {}",
                self.max_rotation
            )));
        }
        if !(self.brightness >= 0.0 && self.brightness < 1.0) {
            return Err(Error::invalid(format!(
                "augment.brightness must be in [0, 1), got {}",
                self.brightness
            )));
        }
        Ok(())
    }
}

/// How an image is fitted to the output size, as sharp's `fit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fit {
    /// Keep the aspect ratio, crop the centre.
    #[default]
    Cover,
    /// Stretch.
    Fill,
}

/// One image's augmentation (the TS `Transform`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transform {
    /// Crop side as a fraction of the image, in (0, 1].
    pub scale: f64,
    /// Crop position in [0, 1] along x and y (0 = left/top edge).
    pub x: f64,
    pub y: f64,
    pub flip: bool,
    /// Degrees, in the direction of sharp's `rotate`.
    pub rotation: f64,
    pub brightness: f64,
}

impl Transform {
    pub const IDENTITY: Transform = Transform {
        scale: 1.0,
        x: 0.5,
        y: 0.5,
        flip: false,
        rotation: 0.0,
        brightness: 1.0,
    };

    /// The transform restricted to the central `fraction` of the image (the TS
    /// `withCenterCrop`).
    pub fn with_center_crop(self, fraction: f64) -> Transform {
        if fraction == 1.0 {
            return self;
        }
        let scale = self.scale * fraction;
        let slack = 1.0 - scale;
        let place = |t: f64| {
            if slack <= 0.0 {
                0.5
            } else {
                ((1.0 - fraction) / 2.0 + t * fraction * (1.0 - self.scale)) / slack
            }
        };
        Transform {
            scale,
            x: place(self.x),
            y: place(self.y),
            ..self
        }
    }
}

/// sfc32 seeded through splitmix32: bit for bit the TS `Rng` (src/rng.ts).
pub struct Rng {
    a: u32,
    b: u32,
    c: u32,
    d: u32,
}

impl Rng {
    /// A stream for `seeds`, e.g. `[seed, epoch, batch]`; seeds are integers below 2^53,
    /// as in JavaScript.
    pub fn new(seeds: &[u64]) -> Self {
        let mut h: u32 = 0x2545_f491;
        for &s in seeds {
            let lo = s as u32;
            let hi = (s >> 32) as u32;
            h = (h ^ lo).wrapping_mul(0x9e37_79b1)
                ^ hi.wrapping_add(0x632b_e5ab).wrapping_mul(0x85eb_ca77);
            h ^= h >> 15;
        }
        let mut state = h;
        let mut words = [0u32; 4];
        for word in &mut words {
            state = state.wrapping_add(0x9e37_79b9);
            let mut z = state;
            z = (z ^ (z >> 16)).wrapping_mul(0x85eb_ca6b);
            z = (z ^ (z >> 13)).wrapping_mul(0xc2b2_ae35);
            *word = z ^ (z >> 16);
        }
        let [a, b, c, d] = words;
        let mut rng = Rng { a, b, c, d };
        for _ in 0..12 {
            rng.next_u32();
        }
        rng
    }

    pub fn next_u32(&mut self) -> u32 {
        let t = self.a.wrapping_add(self.b).wrapping_add(self.d);
        self.d = self.d.wrapping_add(1);
        self.a = self.b ^ (self.b >> 9);
        self.b = self.c.wrapping_add(self.c << 3);
        self.c = self.c.rotate_left(21).wrapping_add(t);
        t
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        f64::from(self.next_u32()) / 4_294_967_296.0
    }

    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.next_f64()
    }

    /// One image's transform, drawn in the TS `drawTransform`'s order.
    pub fn transform(&mut self, options: &AugmentOptions) -> Transform {
        let scale = if options.crop_scale < 1.0 {
            self.uniform(options.crop_scale, 1.0)
        } else {
            1.0
        };
        let x = self.next_f64();
        let y = self.next_f64();
        let flip = options.flip && self.next_f64() < 0.5;
        let rotation = if options.max_rotation > 0.0 {
            self.uniform(-options.max_rotation, options.max_rotation)
        } else {
            0.0
        };
        let brightness = if options.brightness > 0.0 {
            self.uniform(1.0 - options.brightness, 1.0 + options.brightness)
        } else {
            1.0
        };
        Transform {
            scale,
            x,
            y,
            flip,
            rotation,
            brightness,
        }
    }
}

/// The transforms of batch `batch` of epoch `epoch`: the same stream the sharp loader
/// draws from for that batch. Without `augment`, every image gets the identity (then the
/// centre crop).
pub fn draw_batch(
    count: usize,
    augment: Option<&AugmentOptions>,
    center_crop: f64,
    seed: u64,
    epoch: u64,
    batch: u64,
) -> Vec<Transform> {
    let mut rng = augment.map(|_| Rng::new(&[seed, epoch, batch]));
    (0..count)
        .map(|_| {
            let drawn = match (&mut rng, augment) {
                (Some(rng), Some(options)) => rng.transform(options),
                _ => Transform::IDENTITY,
            };
            drawn.with_center_crop(center_crop)
        })
        .collect()
}

/// The 2×3 matrix that maps an output pixel's normalized coordinates (align_corners =
/// false) to the source image's, for a `source` (height, width) image resized to `out`.
///
/// Read right to left, as the sharp path applies it forwards: rotate the source about its
/// centre (keeping its extent), flip (sharp mirrors before it resizes, whatever the call
/// order, so the window's x is measured in the mirrored image), resize to cover the window
/// `out / scale`, cut the window at (x, y).
fn affine(t: &Transform, source: (f64, f64), out: InputSize, fit: Fit) -> [f64; 6] {
    let (src_h, src_w) = source;
    let (out_h, out_w) = (out.height as f64, out.width as f64);
    // The sharp path's whole-pixel geometry: the resize to cover the window, and the
    // window's left/top edge, are rounded as it rounds them.
    let resized = |side: f64| {
        if t.scale < 1.0 {
            side.max((side / t.scale).round())
        } else {
            side
        }
    };
    let (resized_w, resized_h) = (resized(out_w), resized(out_h));
    let edge = |slack: f64, at: f64| slack.min((at * (slack + 1.0)).floor());
    let (kx, ky) = match fit {
        Fit::Cover => {
            let k = (resized_w / src_w).max(resized_h / src_h);
            (k, k)
        }
        Fit::Fill => (resized_w / src_w, resized_h / src_h),
    };
    // Everything in source pixels from the centre: the window's half sides and its offset.
    let flip = if t.flip { -1.0 } else { 1.0 };
    let (half_w, half_h) = (out_w / 2.0 / kx, out_h / 2.0 / ky);
    let cx = (edge(resized_w - out_w, t.x) + (out_w - resized_w) / 2.0) / kx;
    let cy = (edge(resized_h - out_h, t.y) + (out_h - resized_h) / 2.0) / ky;
    let (sin, cos) = t.rotation.to_radians().sin_cos();
    let (sx, sy) = (src_w / 2.0, src_h / 2.0);
    [
        cos * flip * half_w / sx,
        sin * half_h / sx,
        (cos * flip * cx + sin * cy) / sx,
        -sin * flip * half_w / sy,
        cos * half_h / sy,
        (-sin * flip * cx + cos * cy) / sy,
    ]
}

/// `affine_grid(theta, (B, 3, H, W), align_corners = false)`, built by broadcasting: each
/// output pixel's (u, v) enters only as a row term plus a column term, so the grid is one
/// B×1×W×2 plus one B×H×1×2, instead of ATen's B×HW×3 by 3×2 matmul (half the time on
/// the CPU at 120×160×160, the same values to 1e-6).
fn affine_grid(theta: &Tensor, out: InputSize) -> Result<Tensor> {
    let (n, h, w) = (theta.size()[0], out.height, out.width);
    let options = (Kind::Float, theta.device());
    // Pixel centres in normalized coordinates: (2i + 1) / size − 1.
    let centres = |size: i64| -> Result<Tensor> {
        Ok(Tensor::f_arange(size, options)?
            .f_mul_scalar(2.0)?
            .f_add_scalar(1.0)?
            .f_div_scalar(size as f64)?
            .f_sub_scalar(1.0)?)
    };
    let columns = theta.f_select(2, 0)?.f_view([n, 1, 1, 2])?;
    let rows = theta.f_select(2, 1)?.f_view([n, 1, 1, 2])?;
    let offsets = theta.f_select(2, 2)?.f_view([n, 1, 1, 2])?;
    let along_x = centres(w)?.f_view([1, 1, w, 1])?.f_mul(&columns)?;
    let along_y = centres(h)?
        .f_view([1, h, 1, 1])?
        .f_mul(&rows)?
        .f_add(&offsets)?;
    Ok(along_x.f_add(&along_y)?)
}

/// Augments a B×H×W×3 batch (uint8 or float 0..255, any device) into B×out×3 float32 on
/// `device`, values in 0..255: one bilinear resample of the whole batch (zeros outside the
/// image, as sharp's black background), then the brightness multiply. The result is a
/// channels-last view of channels-first memory, which the network input takes without a
/// copy.
pub fn apply(
    images: &Tensor,
    transforms: &[Transform],
    out: InputSize,
    fit: Fit,
    device: Device,
) -> Result<Tensor> {
    let size = images.size();
    if size.len() != 4 || size[3] != 3 {
        return Err(Error::shape(format!(
            "images must be B×H×W×3, got shape {size:?}"
        )));
    }
    let count = size[0];
    if transforms.len() as i64 != count {
        return Err(Error::shape(format!(
            "{} transforms for {count} images",
            transforms.len()
        )));
    }
    let source = (size[1] as f64, size[2] as f64);
    let pixels = images
        .f_to_device(device)?
        .f_to_kind(Kind::Float)?
        .f_permute([0, 3, 1, 2])?;
    let identity = transforms.iter().all(|t| *t == Transform::IDENTITY);
    let resampled_is_fresh = !(identity && size[1] == out.height && size[2] == out.width);
    let resampled = if !resampled_is_fresh {
        pixels
    } else {
        let theta: Vec<f32> = transforms
            .iter()
            .flat_map(|t| affine(t, source, out, fit))
            .map(|v| v as f32)
            .collect();
        let theta = Tensor::f_from_slice(&theta)?
            .f_view([count, 2, 3])?
            .f_to_device(device)?;
        let grid = affine_grid(&theta, out)?;
        // Modes: bilinear (0), zeros padding (0).
        pixels.f_grid_sampler(&grid, 0, 0, false)?
    };
    let brightened = if transforms.iter().all(|t| t.brightness == 1.0) {
        resampled
    } else {
        let factors: Vec<f32> = transforms.iter().map(|t| t.brightness as f32).collect();
        let factors = Tensor::f_from_slice(&factors)?
            .f_view([count, 1, 1, 1])?
            .f_to_device(device)?;
        if resampled_is_fresh {
            // The resample's own output: scale it in place, two passes instead of two copies.
            let mut scaled = resampled;
            let _ = scaled.f_mul_(&factors)?;
            let _ = scaled.f_clamp_(0.0, 255.0)?;
            scaled
        } else {
            resampled.f_mul(&factors)?.f_clamp(0.0, 255.0)?
        }
    };
    Ok(brightened.f_permute([0, 2, 3, 1])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pixels whose value encodes their column (R), row (G) and image (B).
    fn ramp(n: i64, h: i64, w: i64) -> Tensor {
        let values: Vec<u8> = (0..n * h * w)
            .flat_map(|i| {
                let (img, rest) = (i / (h * w), i % (h * w));
                [(rest % w) as u8, (rest / w) as u8, img as u8]
            })
            .collect();
        Tensor::from_slice(&values).view([n, h, w, 3])
    }

    fn out(h: i64, w: i64) -> InputSize {
        InputSize {
            height: h,
            width: w,
        }
    }

    #[test]
    fn the_rng_is_the_ts_rng() {
        // Values printed by src/rng.ts for the same seeds.
        let mut rng = Rng::new(&[7, 3, 11]);
        assert_eq!(
            [rng.next_u32(), rng.next_u32(), rng.next_u32()],
            [1824074052, 1842671685, 3155047637]
        );
        let mut rng = Rng::new(&[(1 << 40) + 5, 0, 1]);
        assert_eq!([rng.next_u32(), rng.next_u32()], [1843154726, 1805502173]);
        let options = AugmentOptions {
            crop_scale: 0.8,
            flip: true,
            max_rotation: 10.0,
            brightness: 0.2,
        };
        let t = Rng::new(&[1, 2, 3]).transform(&options);
        assert_eq!(
            t,
            Transform {
                scale: 0.9949273471254856,
                x: 0.3855317004490644,
                y: 0.19278769567608833,
                flip: true,
                rotation: -4.8787538055330515,
                brightness: 1.0768406599760056
            }
        );
        let c = t.with_center_crop(0.7);
        assert!(
            (c.scale - 0.6964491429878399).abs() < 1e-15
                && (c.x - 0.49866098034401474).abs() < 1e-15
                && (c.y - 0.4964063123531662).abs() < 1e-15
        );
    }

    #[test]
    fn the_broadcast_grid_is_aten_affine_grid() {
        let theta = Tensor::from_slice(&[
            0.9f32, -0.2, 0.1, 0.3, -1.1, -0.05, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0,
        ])
        .view([2, 2, 3]);
        let ours = affine_grid(&theta, out(5, 7)).unwrap();
        let aten = Tensor::affine_grid_generator(&theta, [2, 3, 5, 7], false);
        assert_eq!(ours.size(), aten.size());
        assert!((ours - aten).abs().max().double_value(&[]) < 1e-6);
    }

    #[test]
    fn identity_at_the_same_size_keeps_the_pixels() {
        let images = ramp(2, 6, 8);
        let got = apply(
            &images,
            &[Transform::IDENTITY; 2],
            out(6, 8),
            Fit::Cover,
            Device::Cpu,
        )
        .unwrap();
        assert!(got.equal(&images.to_kind(Kind::Float)));
        // The affine path itself is exact at identity too.
        let theta = affine(&Transform::IDENTITY, (6.0, 8.0), out(6, 8), Fit::Cover);
        assert_eq!(theta, [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
    }

    #[test]
    fn a_flip_flips() {
        let images = ramp(1, 5, 7);
        let flipped = Transform {
            flip: true,
            ..Transform::IDENTITY
        };
        let got = apply(&images, &[flipped], out(5, 7), Fit::Cover, Device::Cpu).unwrap();
        let want = images.to_kind(Kind::Float).flip([2]);
        assert!((got - want).abs().max().double_value(&[]) < 1e-3);
    }

    #[test]
    fn a_crop_samples_inside_its_window() {
        // 100 wide, output 10: the window of a scale-s crop at x, cut as sharp cuts it.
        let images = ramp(1, 100, 100);
        for (scale, x) in [(0.5, 0.0), (0.5, 1.0), (0.8, 0.25), (0.3, 0.6)] {
            let t = Transform {
                scale,
                x,
                y: 0.5,
                ..Transform::IDENTITY
            };
            let got = apply(&images, &[t], out(10, 10), Fit::Cover, Device::Cpu).unwrap();
            let columns = got.select(3, 0);
            let (lo, hi) = (
                columns.min().double_value(&[]),
                columns.max().double_value(&[]),
            );
            // As sharp: resize 100 → round(10 / scale), cut 10 at a whole pixel.
            let resized = (10.0 / scale).round();
            let left = (resized - 10.0).min((x * (resized - 10.0 + 1.0)).floor()) * 100.0 / resized;
            let side = 10.0 * 100.0 / resized;
            assert!(
                lo >= left - 0.5 && hi <= left + side + 0.5,
                "scale {scale} x {x}: columns {lo}..{hi}, window {left}..{}",
                left + side
            );
            // The window's sampled span is its side, less one output pixel's worth.
            let span = hi - lo;
            assert!(
                (span - side * 0.9).abs() < 1e-3,
                "scale {scale}: span {span}"
            );
        }
    }

    #[test]
    fn drawn_crop_scales_stay_in_range_and_the_same_seed_gives_the_same_batch() {
        let options = AugmentOptions {
            crop_scale: 0.6,
            flip: true,
            max_rotation: 15.0,
            brightness: 0.3,
        };
        let transforms = draw_batch(500, Some(&options), 1.0, 9, 2, 4);
        assert!(transforms.iter().all(|t| (0.6..=1.0).contains(&t.scale)));
        assert!(transforms
            .iter()
            .all(|t| t.rotation.abs() <= 15.0 && (0.7..=1.3).contains(&t.brightness)));
        let flips = transforms.iter().filter(|t| t.flip).count();
        assert!((200..300).contains(&flips), "{flips} flips of 500");
        let images = ramp(3, 20, 20);
        let batch = |index| {
            apply(
                &images,
                &draw_batch(3, Some(&options), 1.0, 9, 2, index),
                out(16, 16),
                Fit::Cover,
                Device::Cpu,
            )
            .unwrap()
        };
        let (a, b, c) = (batch(4), batch(4), batch(5));
        assert!(a.equal(&b));
        assert!(!a.equal(&c));
    }

    #[test]
    fn brightness_multiplies_and_clamps() {
        let images = Tensor::from_slice(&[10u8, 100, 200, 50])
            .view([1, 2, 2, 1])
            .repeat([1, 1, 1, 3]);
        let t = Transform {
            brightness: 1.5,
            ..Transform::IDENTITY
        };
        let got = apply(&images, &[t], out(2, 2), Fit::Cover, Device::Cpu).unwrap();
        let values = Vec::<f32>::try_from(got.select(3, 0).flatten(0, -1)).unwrap();
        let want = [15.0, 150.0, 255.0, 75.0];
        assert!(
            values.iter().zip(want).all(|(v, w)| (v - w).abs() < 1e-3),
            "{values:?}"
        );
    }

    #[test]
    fn a_rotation_moves_the_corners_out_and_keeps_the_centre() {
        let images = Tensor::full([1, 21, 21, 3], 200, (Kind::Uint8, Device::Cpu));
        let t = Transform {
            rotation: 30.0,
            ..Transform::IDENTITY
        };
        let got = apply(&images, &[t], out(21, 21), Fit::Cover, Device::Cpu)
            .unwrap()
            .select(3, 0)
            .squeeze();
        assert!((got.double_value(&[10, 10]) - 200.0).abs() < 1e-3);
        assert!(
            got.double_value(&[0, 0]) < 1.0,
            "a corner comes from outside the source"
        );
    }

    #[test]
    fn cover_keeps_the_centre_of_a_wide_image() {
        // 10×20 source to 10×10: cover keeps columns 5..15.
        let images = ramp(1, 10, 20);
        let got = apply(
            &images,
            &[Transform::IDENTITY],
            out(10, 10),
            Fit::Cover,
            Device::Cpu,
        )
        .unwrap();
        let columns = got.select(3, 0);
        assert!((columns.min().double_value(&[]) - 5.0).abs() < 1e-3);
        assert!((columns.max().double_value(&[]) - 14.0).abs() < 1e-3);
        let filled = apply(
            &images,
            &[Transform::IDENTITY],
            out(10, 10),
            Fit::Fill,
            Device::Cpu,
        )
        .unwrap();
        assert!(filled.select(3, 0).max().double_value(&[]) > 17.0);
    }
}
