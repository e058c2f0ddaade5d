//! Turning decoded pixels into network input. The TS layer decodes and resizes; this
//! module only converts layout and scales values, on the model's device.

use crate::error::{Error, Result};
use crate::model::DLIB_MEANS;
use tch::{Device, Kind, Tensor};

/// How pixel values (0..255) are scaled before the network sees them. Saved with a model,
/// since a network only works with the normalization it was trained with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Normalization {
    /// (x − 127.5) / 128, the same for every image.
    #[default]
    Fixed,
    /// Per image: (x − mean) / max(std, 1/√n), as in the FaceNet reference implementations.
    Prewhiten,
    /// dlib's `input_rgb_image`: (x − channel mean) / 256 with the means (122.782,
    /// 117.001, 104.298) of R, G and B.
    Dlib,
}

impl Normalization {
    pub fn name(self) -> &'static str {
        match self {
            Normalization::Fixed => "fixed",
            Normalization::Prewhiten => "prewhiten",
            Normalization::Dlib => "dlib",
        }
    }

    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "fixed" => Ok(Normalization::Fixed),
            "prewhiten" => Ok(Normalization::Prewhiten),
            "dlib" => Ok(Normalization::Dlib),
            other => Err(Error::invalid(format!(
                "unknown normalization '{other}'; expected 'fixed', 'prewhiten' or 'dlib'"
            ))),
        }
    }
}

/// N×H×W×3 pixels (uint8 or float32 in 0..255) on any device → N×3×H×W float32 on `device`,
/// normalized. The channels-last → channels-first permute happens after the copy to the
/// device so that a uint8 batch crosses the bus at a quarter of the float size.
pub fn to_network_input(
    images: &Tensor,
    device: Device,
    normalization: Normalization,
) -> Result<Tensor> {
    let pixels = images
        .f_to_device(device)?
        .f_to_kind(Kind::Float)?
        .f_permute([0, 3, 1, 2])?
        .f_contiguous()?;
    let normalized = match normalization {
        Normalization::Fixed => pixels.f_sub_scalar(127.5)?.f_div_scalar(128.0)?,
        Normalization::Prewhiten => {
            let n = pixels.size()[0];
            let per_image = pixels.f_view([n, -1])?;
            let count = per_image.size()[1] as f64;
            let mean = per_image.f_mean_dim([1i64].as_slice(), true, Kind::Float)?;
            let std = per_image
                .f_std_correction([1i64].as_slice(), 0, true)?
                .f_clamp_min(1.0 / count.sqrt())?;
            per_image.f_sub(&mean)?.f_div(&std)?.f_view_as(&pixels)?
        }
        Normalization::Dlib => {
            // dlib computes (x − mean) / 256 in float32; so does this, channel by channel.
            let means = Tensor::f_from_slice(&DLIB_MEANS.map(|m| m as f32))?
                .f_to_device(device)?
                .f_view([1, 3, 1, 1])?;
            pixels.f_sub(&means)?.f_div_scalar(256.0)?
        }
    };
    Ok(normalized)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_maps_0_and_255_symmetrically() {
        let pixels = Tensor::from_slice(&[0u8, 255, 128]).view([1, 1, 1, 3]);
        let input = to_network_input(&pixels, Device::Cpu, Normalization::Fixed).unwrap();
        let values = Vec::<f32>::try_from(input.flatten(0, -1)).unwrap();
        assert_eq!(values, [-127.5 / 128.0, 127.5 / 128.0, 0.5 / 128.0]);
    }

    #[test]
    fn prewhiten_gives_zero_mean_unit_std_per_image() {
        let pixels = Tensor::from_slice(&[0f32, 10., 20., 30., 40., 50., 5., 9., 1., 7., 3., 250.])
            .view([2, 1, 2, 3]);
        let input = to_network_input(&pixels, Device::Cpu, Normalization::Prewhiten).unwrap();
        let flat = input.view([2, -1]);
        let mean =
            Vec::<f32>::try_from(flat.mean_dim([1i64].as_slice(), false, Kind::Float)).unwrap();
        let std = Vec::<f32>::try_from(flat.std_correction([1i64].as_slice(), 0, false)).unwrap();
        for i in 0..2 {
            assert!(mean[i].abs() < 1e-5);
            assert!((std[i] - 1.0).abs() < 1e-4);
        }
    }
}
