use facenet::detect::{DetectOptions, Mtcnn};
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

fn weights() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../weights/mtcnn/mtcnn.safetensors")
}

#[test]
fn truncated_weights_are_a_weights_error_naming_the_file() {
    let bytes = std::fs::read(weights()).unwrap();
    let dir = std::env::temp_dir().join(format!("mtcnn-trunc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("cut.safetensors");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = Mtcnn::load(&path, Device::Cpu).err().expect("must fail");
    assert_eq!(err.code(), "ERR_WEIGHTS");
    assert!(err.to_string().contains("cut.safetensors"), "{err}");
}

#[test]
fn a_blank_image_has_no_faces() {
    let m = Mtcnn::load(&weights(), Device::Cpu).unwrap();
    let img = Tensor::full([480, 640, 3], 128, (Kind::Uint8, Device::Cpu));
    let out = m.detect(&[img], &DetectOptions::default()).unwrap();
    assert_eq!(out.len(), 1);
    assert!(out[0].is_empty());
}

/// Compares with facenet-pytorch outputs written by a fixture (MTCNN_REF=/tmp/mtcnn_ref.txt,
/// images as raw RGB next to it).
#[test]
fn matches_facenet_pytorch_reference_when_given() {
    let Ok(reference) = std::env::var("MTCNN_REF") else {
        return;
    };
    let text = std::fs::read_to_string(&reference).unwrap();
    let dir = PathBuf::from(&reference).parent().unwrap().to_path_buf();
    let m = Mtcnn::load(&weights(), Device::Cpu).unwrap();
    let mut lines = text.lines();
    let (mut worst_box, mut worst_p, mut images) = (0f32, 0f32, 0);
    while let Some(head) = lines.next() {
        let v: Vec<i64> = head.split(' ').map(|s| s.parse().unwrap()).collect();
        let (i, h, w, n) = (v[0], v[1], v[2], v[3] as usize);
        let raw = std::fs::read(dir.join(format!("mtcnn_img{i}.rgb"))).unwrap();
        let img = Tensor::from_slice(&raw).reshape([h, w, 3]);
        let faces = &m.detect(&[img], &DetectOptions::default()).unwrap()[0];
        assert_eq!(faces.len(), n, "image {i}");
        for f in faces {
            let r: Vec<f32> = lines
                .next()
                .unwrap()
                .split(' ')
                .map(|s| s.parse().unwrap())
                .collect();
            for (ours, theirs) in f.bbox.iter().zip(&r) {
                worst_box = worst_box.max((ours - theirs).abs());
            }
            for p in 0..5 {
                worst_box = worst_box.max((f.landmarks[p][0] - r[5 + 2 * p]).abs());
                worst_box = worst_box.max((f.landmarks[p][1] - r[6 + 2 * p]).abs());
            }
            worst_p = worst_p.max((f.score - r[4]).abs());
        }
        images += 1;
    }
    eprintln!(
        "{images} images: worst box/landmark error {worst_box} px, worst prob error {worst_p}"
    );
    assert!(worst_box <= 1.0 && worst_p <= 1e-3);
}
