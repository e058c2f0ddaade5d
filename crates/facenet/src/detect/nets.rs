//! P-, R- and O-Net as plain fallible tch ops over facenet-pytorch's weights, so nothing here
//! can panic on bad input. The dense layers see the conv output permuted to (N, W, H, C), as
//! facenet-pytorch does (its weights were converted from Caffe's column-major layout).

use crate::error::{Error, Result};
use crate::weights;
use std::collections::HashMap;
use std::path::Path;
use tch::{Device, Kind, Tensor};

pub struct Net {
    params: HashMap<String, Tensor>,
}

fn load_net(
    path: &Path,
    bytes: &[u8],
    name: &str,
    expected: &[&str],
    device: Device,
) -> Result<Net> {
    let raw = weights::read_prefixed(path, bytes, &format!("{name}."))?;
    let mut params = HashMap::new();
    for key in expected {
        let t = raw.get(*key).ok_or_else(|| {
            Error::Weights(format!("{}: missing tensor '{name}.{key}'", path.display()))
        })?;
        params.insert((*key).to_owned(), t.f_to_device(device)?);
    }
    Ok(Net { params })
}

impl Net {
    fn p(&self, key: &str) -> &Tensor {
        // every key used below was checked present in `load_net`
        &self.params[key]
    }
    fn conv(&self, x: &Tensor, name: &str) -> Result<Tensor> {
        Ok(x.f_conv2d(
            self.p(&format!("{name}.weight")),
            Some(self.p(&format!("{name}.bias"))),
            [1, 1],
            [0, 0],
            [1, 1],
            1,
        )?)
    }
    fn prelu(&self, x: &Tensor, name: &str) -> Result<Tensor> {
        Ok(x.f_prelu(self.p(&format!("{name}.weight")))?)
    }
    fn dense(&self, x: &Tensor, name: &str) -> Result<Tensor> {
        Ok(x.f_linear(
            self.p(&format!("{name}.weight")),
            Some(self.p(&format!("{name}.bias"))),
        )?)
    }
}

fn pool(x: &Tensor, k: i64, s: i64) -> Result<Tensor> {
    Ok(x.f_max_pool2d([k, k], [s, s], [0, 0], [1, 1], true)?)
}

fn flatten_whc(x: &Tensor) -> Result<Tensor> {
    let n = x.size()[0];
    Ok(x.f_permute([0, 3, 2, 1])?
        .f_contiguous()?
        .f_reshape([n, -1])?)
}

pub struct Nets {
    pub pnet: Net,
    pub rnet: Net,
    pub onet: Net,
}

impl Nets {
    pub fn load(path: &Path, device: Device) -> Result<Nets> {
        let bytes = weights::read_file(path)?;
        let with_bias = |names: &[&'static str]| -> Vec<String> {
            names
                .iter()
                .flat_map(|n| {
                    if n.starts_with("prelu") {
                        vec![format!("{n}.weight")]
                    } else {
                        vec![format!("{n}.weight"), format!("{n}.bias")]
                    }
                })
                .collect()
        };
        let load = |name: &str, layers: &[&'static str]| -> Result<Net> {
            let keys = with_bias(layers);
            let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
            load_net(path, &bytes, name, &refs, device)
        };
        Ok(Nets {
            pnet: load(
                "pnet",
                &[
                    "conv1", "prelu1", "conv2", "prelu2", "conv3", "prelu3", "conv4_1", "conv4_2",
                ],
            )?,
            rnet: load(
                "rnet",
                &[
                    "conv1", "prelu1", "conv2", "prelu2", "conv3", "prelu3", "dense4", "prelu4",
                    "dense5_1", "dense5_2",
                ],
            )?,
            onet: load(
                "onet",
                &[
                    "conv1", "prelu1", "conv2", "prelu2", "conv3", "prelu3", "conv4", "prelu4",
                    "dense5", "prelu5", "dense6_1", "dense6_2", "dense6_3",
                ],
            )?,
        })
    }

    /// (box regression N×4×h×w, face probability N×h×w)
    pub fn pnet(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let n = &self.pnet;
        let x = pool(&n.prelu(&n.conv(x, "conv1")?, "prelu1")?, 2, 2)?;
        let x = n.prelu(&n.conv(&x, "conv2")?, "prelu2")?;
        let x = n.prelu(&n.conv(&x, "conv3")?, "prelu3")?;
        let prob = n
            .conv(&x, "conv4_1")?
            .f_softmax(1, Kind::Float)?
            .f_select(1, 1)?;
        Ok((n.conv(&x, "conv4_2")?, prob))
    }

    /// (regression N×4, probability N)
    pub fn rnet(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let n = &self.rnet;
        let x = pool(&n.prelu(&n.conv(x, "conv1")?, "prelu1")?, 3, 2)?;
        let x = pool(&n.prelu(&n.conv(&x, "conv2")?, "prelu2")?, 3, 2)?;
        let x = n.prelu(&n.conv(&x, "conv3")?, "prelu3")?;
        let x = n.prelu(&n.dense(&flatten_whc(&x)?, "dense4")?, "prelu4")?;
        let prob = n
            .dense(&x, "dense5_1")?
            .f_softmax(1, Kind::Float)?
            .f_select(1, 1)?;
        Ok((n.dense(&x, "dense5_2")?, prob))
    }

    /// (regression N×4, landmarks N×10 (5 x then 5 y, relative), probability N)
    pub fn onet(&self, x: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let n = &self.onet;
        let x = pool(&n.prelu(&n.conv(x, "conv1")?, "prelu1")?, 3, 2)?;
        let x = pool(&n.prelu(&n.conv(&x, "conv2")?, "prelu2")?, 3, 2)?;
        let x = pool(&n.prelu(&n.conv(&x, "conv3")?, "prelu3")?, 2, 2)?;
        let x = n.prelu(&n.conv(&x, "conv4")?, "prelu4")?;
        let x = n.prelu(&n.dense(&flatten_whc(&x)?, "dense5")?, "prelu5")?;
        let prob = n
            .dense(&x, "dense6_1")?
            .f_softmax(1, Kind::Float)?
            .f_select(1, 1)?;
        Ok((n.dense(&x, "dense6_2")?, n.dense(&x, "dense6_3")?, prob))
    }
}
