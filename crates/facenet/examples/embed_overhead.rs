//! Where the time of one `embed` call goes on a GPU, without Node in the way: the same
//! batch embedded from (a) a CPU tensor built once, as the PyTorch twin of
//! bench/inference.py does; (b) a byte slice copied into a fresh tensor on every call,
//! as the binding does; (c) a byte slice copied into a pinned tensor reused across calls;
//! (d) a tensor already on the device (the network and the copy back alone).
//! Prints one JSON line of median milliseconds per call.
//!
//!   cargo run --release -p facenet --example embed_overhead -- [arch=nn1] [device=cuda] [iters=100] [batch=32]

use facenet::{parse_device, Arch, FaceNet, ModelConfig};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

fn median_ms(iters: usize, mut call: impl FnMut()) -> f64 {
    call();
    let mut times: Vec<f64> = (0..iters)
        .map(|_| {
            let start = Instant::now();
            call();
            start.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() -> facenet::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arch = Arch::from_name(args.first().map_or("nn1", String::as_str))?;
    let device = parse_device(args.get(1).map_or("cuda", String::as_str))?;
    let iters: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100);
    let batch: i64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(32);
    let model = FaceNet::new(ModelConfig {
        device,
        ..ModelConfig::new(arch)
    })?;
    let size = model.input_size();
    let shape = [batch, size.height, size.width, 3];
    let len = shape.iter().product::<i64>() as usize;
    let bytes: Vec<u8> = (0..len)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();

    let built_once = Tensor::from_slice(&bytes).view(shape);
    let a = median_ms(iters, || {
        let _embeddings = model.embed(&built_once).unwrap();
    });
    let b = median_ms(iters, || {
        let fresh = Tensor::from_slice(&bytes).view(shape);
        let _embeddings = model.embed(&fresh).unwrap();
    });
    let pinned = if device == Device::Cpu {
        Tensor::zeros(shape, (Kind::Uint8, Device::Cpu))
    } else {
        Tensor::zeros(shape, (Kind::Uint8, Device::Cpu)).pin_memory(device)
    };
    let c = median_ms(iters, || {
        // SAFETY: `pinned` is a contiguous uint8 CPU tensor of exactly `len` bytes.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), pinned.data_ptr() as *mut u8, len) };
        let _embeddings = model.embed(&pinned).unwrap();
    });
    let on_device = built_once.to_device(device);
    let d = median_ms(iters, || {
        let _embeddings = model.embed(&on_device).unwrap();
    });
    println!(
        "{{\"arch\":\"{}\",\"device\":\"{}\",\"batch\":{batch},\"iters\":{iters},\"msBuiltOnce\":{a:.3},\"msFreshCopy\":{b:.3},\"msPinnedCopy\":{c:.3},\"msOnDevice\":{d:.3}}}",
        arch.name(),
        facenet::device_name(device)
    );
    Ok(())
}
