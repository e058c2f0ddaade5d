//! Weight initialization. FaceNet trains from random initialization; we use Xavier
//! (Glorot) uniform for every conv and linear weight, zero biases, and batch-norm
//! scale 1 / shift 0, all drawn from the model's seed.

use tch::nn;

/// Xavier/Glorot uniform: U(-b, b) with b = sqrt(6 / (fan_in + fan_out)).
pub fn xavier_uniform(fan_in: i64, fan_out: i64) -> nn::Init {
    let bound = (6.0 / (fan_in + fan_out) as f64).sqrt();
    nn::Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

/// A fully connected layer with Xavier weights and zero bias.
pub fn linear(path: nn::Path, d_in: i64, d_out: i64) -> nn::Linear {
    let config = nn::LinearConfig {
        ws_init: xavier_uniform(d_in, d_out),
        bs_init: Some(nn::Init::Const(0.0)),
        bias: true,
    };
    nn::linear(path, d_in, d_out, config)
}
