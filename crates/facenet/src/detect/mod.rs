//! MTCNN face detection (Zhang et al. 2016) matched step by step to facenet-pytorch 2.6.0's
//! `detect_face`: area-resampled pyramid, (x − 127.5) × 0.0078125 normalization, per-scale
//! then per-image Union NMS, crops clipped to the image (not zero-padded) and area-resized
//! to 24/48, 'Min' NMS after O-Net. Any deviation moves boxes by pixels, so each is kept.

mod nets;
mod nms;

use crate::error::{Error, Result};
use std::path::Path;
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone, PartialEq)]
pub struct Face {
    /// x1, y1, x2, y2 in input pixels
    pub bbox: [f32; 4],
    pub score: f32,
    /// left eye, right eye, nose, mouth left, mouth right (x, y)
    pub landmarks: [[f32; 2]; 5],
}

#[derive(Debug, Clone, PartialEq)]
pub struct DetectOptions {
    pub min_face_size: f64,
    pub factor: f64,
    pub thresholds: [f64; 3],
}

impl Default for DetectOptions {
    fn default() -> Self {
        DetectOptions {
            min_face_size: 20.0,
            factor: 0.709,
            thresholds: [0.6, 0.7, 0.7],
        }
    }
}

/// Pixels of one batch of equal-size images. On a GPU, large batches fill the device (16
/// photos of 640×480). On a CPU, past a few small photos the pyramid's tensors fall out of
/// cache: 64 LFW photos (150×150) in one batch ran at 0.6× of batches of 8, and 8 photos of
/// 640×480 at 0.7× of one at a time, so a CPU batch stays near 8 × 150 × 150 pixels.
const GPU_BATCH_PIXELS: i64 = 16 * 640 * 480;
const CPU_BATCH_PIXELS: i64 = 8 * 150 * 150;

pub struct Mtcnn {
    nets: nets::Nets,
    device: Device,
}

#[derive(Clone, Copy)]
struct Cand {
    b: [f32; 4],
    score: f32,
    reg: [f32; 4],
}

fn check_options(options: &DetectOptions) -> Result<()> {
    if options.min_face_size > 0.0 && options.factor > 0.0 && options.factor < 1.0 {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "minFaceSize must be > 0 and factor in (0, 1); got {} and {}",
        options.min_face_size, options.factor
    )))
}

/// An H×W×3 image (`dims` 3) or an N×H×W×3 batch (`dims` 4) of uint8 RGB.
fn check_images(images: &Tensor, dims: usize) -> Result<()> {
    let size = images.size();
    if size.len() == dims && size[dims - 1] == 3 && images.kind() == Kind::Uint8 {
        return Ok(());
    }
    let what = if dims == 3 {
        "an image must be an H×W×3"
    } else {
        "a batch must be an N×H×W×3"
    };
    Err(Error::shape(format!(
        "{what} uint8 tensor; got {:?} {:?}",
        size,
        images.kind()
    )))
}

fn floats(t: &Tensor) -> Result<Vec<f32>> {
    Ok(Vec::<f32>::try_from(
        t.f_to_device(Device::Cpu)?
            .f_to_kind(Kind::Float)?
            .f_contiguous()?
            .f_flatten(0, -1)?,
    )?)
}

fn normalize(x: &Tensor) -> Result<Tensor> {
    Ok(x.f_sub_scalar(127.5)?.f_mul_scalar(0.0078125)?)
}

fn keep(cands: &[Cand], threshold: f32, min_mode: bool) -> Vec<Cand> {
    let boxes: Vec<[f32; 4]> = cands.iter().map(|c| c.b).collect();
    let scores: Vec<f32> = cands.iter().map(|c| c.score).collect();
    nms::nms(&boxes, &scores, threshold, min_mode)
        .into_iter()
        .map(|i| cands[i])
        .collect()
}

/// Squares a box around its centre (facenet-pytorch's `rerec`).
fn square(b: [f32; 4]) -> [f32; 4] {
    let h = b[3] - b[1];
    let w = b[2] - b[0];
    let l = w.max(h);
    let x1 = b[0] + w * 0.5 - l * 0.5;
    let y1 = b[1] + h * 0.5 - l * 0.5;
    [x1, y1, x1 + l, y1 + l]
}

/// Applies a stage's regression with +1-pixel widths (facenet-pytorch's `bbreg`).
fn regress(b: [f32; 4], r: [f32; 4]) -> [f32; 4] {
    let w = b[2] - b[0] + 1.0;
    let h = b[3] - b[1] + 1.0;
    [
        b[0] + r[0] * w,
        b[1] + r[1] * h,
        b[2] + r[2] * w,
        b[3] + r[3] * h,
    ]
}

impl Mtcnn {
    pub fn load(weights: &Path, device: Device) -> Result<Mtcnn> {
        Ok(Mtcnn {
            nets: nets::Nets::load(weights, device)?,
            device,
        })
    }

    /// images: each H×W×3 uint8 (RGB) tensor, any sizes; one Vec<Face> per image, sorted by score desc.
    /// Consecutive images of one size run as one batch: one P-Net call per pyramid scale and one
    /// R-Net and one O-Net call for the whole batch, as facenet-pytorch batches equal-size images.
    pub fn detect(&self, images: &[Tensor], options: &DetectOptions) -> Result<Vec<Vec<Face>>> {
        check_options(options)?;
        for image in images {
            check_images(image, 3)?;
        }
        let mut out = Vec::with_capacity(images.len());
        let mut start = 0;
        while start < images.len() {
            let size = images[start].size();
            let mut end = start + 1;
            while end < images.len() && images[end].size() == size {
                end += 1;
            }
            let group = if end - start == 1 {
                images[start].f_unsqueeze(0)?
            } else {
                Tensor::f_stack(&images[start..end], 0)?
            };
            out.extend(self.detect_stacked(&group, options)?);
            start = end;
        }
        Ok(out)
    }

    /// Faces of an N×H×W×3 uint8 (RGB) batch of equal-size images, one Vec<Face> per image.
    /// The batch runs in device-sized chunks (views of it, not copies).
    pub fn detect_stacked(
        &self,
        images: &Tensor,
        options: &DetectOptions,
    ) -> Result<Vec<Vec<Face>>> {
        check_options(options)?;
        check_images(images, 4)?;
        let size = images.size();
        let (n, per) = (size[0], (size[1] * size[2]).max(1));
        let budget = if self.device.is_cuda() {
            GPU_BATCH_PIXELS
        } else {
            CPU_BATCH_PIXELS
        };
        let most = (budget / per).max(1);
        tch::no_grad(|| {
            let mut out = Vec::with_capacity(n as usize);
            let mut start = 0;
            while start < n {
                let count = most.min(n - start);
                out.extend(self.detect_batch(&images.f_narrow(0, start, count)?, options)?);
                start += count;
            }
            Ok(out)
        })
    }

    /// Crops each box (clipped to the image, 1-based inclusive like facenet-pytorch's `pad`)
    /// and area-resizes it to size×size; boxes with an empty crop are dropped.
    fn crops(
        &self,
        img: &Tensor,
        cands: Vec<Cand>,
        w: i64,
        h: i64,
        size: i64,
    ) -> Result<(Vec<Cand>, Vec<Tensor>)> {
        let mut kept = Vec::new();
        let mut data = Vec::new();
        for c in cands {
            let x = (c.b[0].trunc() as i64).max(1);
            let y = (c.b[1].trunc() as i64).max(1);
            let ex = (c.b[2].trunc() as i64).min(w);
            let ey = (c.b[3].trunc() as i64).min(h);
            if ey > y - 1 && ex > x - 1 {
                let crop = img
                    .f_narrow(2, y - 1, ey - y + 1)?
                    .f_narrow(3, x - 1, ex - x + 1)?;
                data.push(crop.f_adaptive_avg_pool2d([size, size])?);
                kept.push(c);
            }
        }
        Ok((kept, data))
    }

    /// Crops every image's candidates at `size`, runs `net` once on all of them, and hands each
    /// image its candidates with their rows of the outputs (`None` when no image has any).
    fn stage<T>(
        &self,
        batch: &Tensor,
        cands: Vec<Vec<Cand>>,
        size: i64,
        net: impl FnOnce(&Tensor) -> Result<T>,
    ) -> Result<Option<(Vec<Vec<Cand>>, T)>> {
        let (h, w) = (batch.size()[2], batch.size()[3]);
        let mut kept = Vec::with_capacity(cands.len());
        let mut data = Vec::new();
        for (i, c) in cands.into_iter().enumerate() {
            let (k, d) = self.crops(&batch.f_narrow(0, i as i64, 1)?, c, w, h, size)?;
            kept.push(k);
            data.extend(d);
        }
        if data.is_empty() {
            return Ok(None);
        }
        Ok(Some((kept, net(&normalize(&Tensor::f_cat(&data, 0)?)?)?)))
    }

    /// `images`: N×H×W×3 uint8, checked by the caller.
    fn detect_batch(&self, images: &Tensor, o: &DetectOptions) -> Result<Vec<Vec<Face>>> {
        let size = images.size();
        let (n, h, w) = (size[0] as usize, size[1], size[2]);
        let batch = images
            .f_to_device(self.device)?
            .f_permute([0, 3, 1, 2])?
            .f_to_kind(Kind::Float)?;
        let m = 12.0 / o.min_face_size;
        let mut minl = (h.min(w) as f64) * m;
        let mut scales = Vec::new();
        let mut s = m;
        while minl >= 12.0 {
            scales.push(s);
            s *= o.factor;
            minl *= o.factor;
        }

        // Stage 1: P-Net over the pyramid, every image of the batch at once per scale.
        let mut cands: Vec<Vec<Cand>> = vec![Vec::new(); n];
        for &scale in &scales {
            let hs = (h as f64 * scale + 1.0) as i64;
            let ws = (w as f64 * scale + 1.0) as i64;
            let data = normalize(&batch.f_adaptive_avg_pool2d([hs, ws])?)?;
            let (reg, prob) = self.nets.pnet(&data)?;
            let (ph, pw) = (prob.size()[1] as usize, prob.size()[2] as usize);
            let prob = floats(&prob)?;
            let reg = floats(&reg)?;
            let plane = ph * pw;
            let thr = o.thresholds[0] as f32;
            let sc = scale as f32;
            for (i, image) in cands.iter_mut().enumerate() {
                let (prob, reg) = (&prob[i * plane..], &reg[4 * i * plane..]);
                let mut level = Vec::new();
                for yy in 0..ph {
                    for xx in 0..pw {
                        let k = yy * pw + xx;
                        if prob[k] >= thr {
                            let (bx, by) = (xx as f32, yy as f32);
                            level.push(Cand {
                                b: [
                                    ((2.0 * bx + 1.0) / sc).floor(),
                                    ((2.0 * by + 1.0) / sc).floor(),
                                    ((2.0 * bx + 12.0) / sc).floor(),
                                    ((2.0 * by + 12.0) / sc).floor(),
                                ],
                                score: prob[k],
                                reg: [
                                    reg[k],
                                    reg[plane + k],
                                    reg[2 * plane + k],
                                    reg[3 * plane + k],
                                ],
                            });
                        }
                    }
                }
                image.extend(keep(&level, 0.5, false));
            }
        }
        let cands: Vec<Vec<Cand>> = cands
            .iter()
            .map(|image| {
                keep(image, 0.7, false)
                    .into_iter()
                    .map(|c| {
                        let rw = c.b[2] - c.b[0];
                        let rh = c.b[3] - c.b[1];
                        let b = [
                            c.b[0] + c.reg[0] * rw,
                            c.b[1] + c.reg[1] * rh,
                            c.b[2] + c.reg[2] * rw,
                            c.b[3] + c.reg[3] * rh,
                        ];
                        Cand { b: square(b), ..c }
                    })
                    .collect()
            })
            .collect();

        // Stage 2: R-Net on 24×24 crops of every image's candidates, in one call.
        let Some((cands, (reg, prob))) = self.stage(&batch, cands, 24, |x| self.nets.rnet(x))?
        else {
            return Ok(vec![Vec::new(); n]);
        };
        let (reg, prob) = (floats(&reg)?, floats(&prob)?);
        let mut row = 0;
        let cands: Vec<Vec<Cand>> = cands
            .iter()
            .map(|image| {
                let mut passed = Vec::new();
                for c in image {
                    let k = row;
                    row += 1;
                    if prob[k] > o.thresholds[1] as f32 {
                        passed.push(Cand {
                            b: c.b,
                            score: prob[k],
                            reg: [reg[4 * k], reg[4 * k + 1], reg[4 * k + 2], reg[4 * k + 3]],
                        });
                    }
                }
                keep(&passed, 0.7, false)
                    .into_iter()
                    .map(|c| Cand {
                        b: square(regress(c.b, c.reg)),
                        ..c
                    })
                    .collect()
            })
            .collect();

        // Stage 3: O-Net on 48×48 crops, landmarks, then 'Min' NMS per image.
        let Some((cands, (reg, points, prob))) =
            self.stage(&batch, cands, 48, |x| self.nets.onet(x))?
        else {
            return Ok(vec![Vec::new(); n]);
        };
        let (reg, points, prob) = (floats(&reg)?, floats(&points)?, floats(&prob)?);
        let mut row = 0;
        Ok(cands
            .iter()
            .map(|image| {
                let mut faces = Vec::new();
                let mut boxes = Vec::new();
                for c in image {
                    let k = row;
                    row += 1;
                    if prob[k] > o.thresholds[2] as f32 {
                        let wi = c.b[2] - c.b[0] + 1.0;
                        let hi = c.b[3] - c.b[1] + 1.0;
                        let mut landmarks = [[0f32; 2]; 5];
                        for (p, lm) in landmarks.iter_mut().enumerate() {
                            lm[0] = wi * points[10 * k + p] + c.b[0] - 1.0;
                            lm[1] = hi * points[10 * k + 5 + p] + c.b[1] - 1.0;
                        }
                        let r = [reg[4 * k], reg[4 * k + 1], reg[4 * k + 2], reg[4 * k + 3]];
                        let b = regress(c.b, r);
                        boxes.push(b);
                        faces.push(Face {
                            bbox: b,
                            score: prob[k],
                            landmarks,
                        });
                    }
                }
                let scores: Vec<f32> = faces.iter().map(|f| f.score).collect();
                nms::nms(&boxes, &scores, 0.7, true)
                    .into_iter()
                    .map(|i| faces[i].clone())
                    .collect()
            })
            .collect())
    }
}
