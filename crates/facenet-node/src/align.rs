//! Aligned face crops for JavaScript: photos and the faces found in them in, one N×S×S×3
//! uint8 batch out. Each call copies its pixels into tensors once and runs on a thread of
//! its own (see `mining::spawn`), so neither the JS thread nor libuv's pool waits on it.

use crate::error::Result;
use crate::error::{invalid, to_js};
use crate::mining::spawn;
use crate::options::BindingAlignMode;
use facenet::align::{align, AlignMode, AlignOptions, FaceRef};
use napi::bindgen_prelude::{Float32Array, Object, Uint32Array, Uint8Array};
use napi::Env;
use napi_derive::napi;
use tch::Tensor;

#[napi(object)]
pub struct BindingAlignOptions {
    /// Side of the square crops.
    pub size: u32,
    pub mode: BindingAlignMode,
    /// Margin in output pixels (mode `margin` only).
    pub margin: f64,
    pub device: String,
    pub threads: u32,
}

/// Floats per face in `faces`: box (x1, y1, x2, y2), then 5 landmarks (x, y).
const FACE_VALUES: usize = 14;

fn parse_mode(options: &BindingAlignOptions) -> AlignMode {
    match options.mode {
        BindingAlignMode::Template => AlignMode::Template,
        BindingAlignMode::Margin => AlignMode::Margin {
            margin: options.margin,
        },
        BindingAlignMode::Dlib => AlignMode::Dlib,
    }
}

/// Splits `pixels` (the photos' H×W×3 uint8 pixels, one after another) into tensors, with
/// `shapes` holding each photo's height and width.
fn photos(pixels: &[u8], shapes: &[u32]) -> Result<Vec<Tensor>> {
    if !shapes.len().is_multiple_of(2) {
        return Err(invalid(format!(
            "shapes must hold a height and a width per image, got {} values",
            shapes.len()
        )));
    }
    let mut out = Vec::with_capacity(shapes.len() / 2);
    let mut at = 0usize;
    for (i, hw) in shapes.chunks(2).enumerate() {
        let (h, w) = (hw[0] as usize, hw[1] as usize);
        let len = h * w * 3;
        let bytes = pixels.get(at..at + len).ok_or_else(|| {
            crate::error::coded(
                "ERR_SHAPE",
                format!(
                    "image {i} ({h}×{w}×3) runs past the end of the pixel data ({} bytes)",
                    pixels.len()
                ),
            )
        })?;
        let tensor = Tensor::f_from_slice(bytes)
            .and_then(|t| t.f_view([h as i64, w as i64, 3]))
            .map_err(|e| to_js(e.into()))?;
        out.push(tensor);
        at += len;
    }
    if at != pixels.len() {
        return Err(crate::error::coded(
            "ERR_SHAPE",
            format!(
                "the pixel data has {} bytes but the shapes need {at}",
                pixels.len()
            ),
        ));
    }
    Ok(out)
}

fn face_refs(faces: &[f32], images: &[u32]) -> Result<Vec<FaceRef>> {
    if faces.len() != images.len() * FACE_VALUES {
        return Err(invalid(format!(
            "faces must hold {FACE_VALUES} values per face ({} faces), got {}",
            images.len(),
            faces.len()
        )));
    }
    Ok(faces
        .chunks(FACE_VALUES)
        .zip(images)
        .map(|(v, &image)| FaceRef {
            image: image as usize,
            bbox: [v[0], v[1], v[2], v[3]],
            landmarks: [
                [v[4], v[5]],
                [v[6], v[7]],
                [v[8], v[9]],
                [v[10], v[11]],
                [v[12], v[13]],
            ],
        })
        .collect())
}

/// Cuts the faces out of the photos: `faces` holds 14 floats per face (box, then five
/// landmarks), `faceImages` the photo each face is in. Resolves to N×S×S×3 uint8 pixels.
#[napi(ts_return_type = "Promise<Uint8Array>")]
pub fn align_crops<'env>(
    env: &'env Env,
    pixels: Uint8Array,
    shapes: Uint32Array,
    faces: Float32Array,
    face_images: Uint32Array,
    options: BindingAlignOptions,
) -> Result<Object<'env>> {
    let images = photos(&pixels, &shapes)?;
    let refs = face_refs(&faces, &face_images)?;
    let align_options = AlignOptions {
        size: i64::from(options.size),
        mode: parse_mode(&options),
    };
    let device = facenet::parse_device(&options.device).map_err(to_js)?;
    spawn(
        env,
        options.threads,
        move || {
            let crops = align(&images, &refs, &align_options, device).map_err(to_js)?;
            Vec::<u8>::try_from(crops.flatten(0, -1)).map_err(|e| to_js(e.into()))
        },
        |bytes| Ok(Uint8Array::new(bytes)),
    )
}
