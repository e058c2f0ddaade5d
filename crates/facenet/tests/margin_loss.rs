//! The margin losses against their PyTorch twin (tests/twins/margin_loss.py, run by the torch
//! venv's python): loss value and gradients with respect to the embeddings, the class weights
//! and the centres, within 1e-5.

use facenet::loss::margin::{margin_loss, MarginLoss};
use std::path::PathBuf;
use std::process::Command;
use tch::{Device, Kind, Tensor};

const B: i64 = 12;
const D: i64 = 16;
const C: i64 = 5;

fn python() -> String {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.libtorch/python");
    std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{} (written by `npm install`): {e}", file.display()))
        .trim()
        .to_string()
}

/// Deterministic inputs without libtorch's global generator. Rows 0 and 1 point away from
/// their class (θ_y near π, so θ_y + m > π) and row 2 sits on it.
fn inputs() -> (Tensor, Tensor, Tensor, Tensor) {
    let wave = |n: i64, a: f64| {
        Tensor::from_slice(
            &(0..n)
                .map(|i| ((i as f64) * a).sin() as f32)
                .collect::<Vec<_>>(),
        )
    };
    let weights = wave(C * D, 0.77).reshape([C, D]) * 1.3;
    let labels = Tensor::from_slice(&(0..B).map(|i| (i * 7 + 3) % C).collect::<Vec<i64>>());
    let mut embeddings = wave(B * D, 1.91).reshape([B, D]);
    for (row, sign) in [(0i64, -1.0), (1, -1.0), (2, 1.0)] {
        let own = weights.get(labels.int64_value(&[row]));
        let near = &own * sign + wave(D, 3.3 + row as f64) * 0.01;
        embeddings.get(row).copy_(&near);
    }
    let norms = embeddings.norm_scalaropt_dim(2, [1i64].as_slice(), true);
    embeddings /= norms;
    let centers = wave(C * D, 2.45).reshape([C, D]) * 0.3;
    (embeddings, labels, weights, centers)
}

fn close(name: &str, ours: &Tensor, theirs: &Tensor) -> f64 {
    assert_eq!(ours.size(), theirs.size(), "{name}: shapes");
    let bound = theirs.abs() * 1e-5 + 1e-5;
    let diff = (ours - theirs).abs();
    let worst = f64::try_from(diff.max()).unwrap();
    let over = f64::try_from((&diff - &bound).max()).unwrap();
    assert!(over <= 0.0, "{name}: worst difference {worst:e}");
    worst
}

fn check(loss: MarginLoss, config: &str) {
    let (embeddings, labels, weights, centers) = inputs();
    let x = embeddings.set_requires_grad(true);
    let w = weights.set_requires_grad(true);
    let c = centers.set_requires_grad(true);
    let ours = margin_loss(&loss, &x, &labels, &w, Some(&c)).unwrap();
    ours.backward();

    let dir = std::env::temp_dir().join(format!(
        "margin-twin-{}-{}",
        std::process::id(),
        config.len()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let (src, dst) = (dir.join("in.safetensors"), dir.join("out.safetensors"));
    Tensor::write_safetensors(
        &[
            ("embeddings", &embeddings.detach()),
            ("labels", &labels),
            ("weights", &weights.detach()),
            ("centers", &centers.detach()),
        ],
        &src,
    )
    .unwrap();
    let run = Command::new(python())
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/twins/margin_loss.py"))
        .args([src.to_str().unwrap(), dst.to_str().unwrap(), config])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "twin failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let theirs: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(&dst)
        .unwrap()
        .into_iter()
        .collect();
    let mut worst = close("loss", &ours.detach().reshape([1]), &theirs["loss"]);
    worst = worst.max(close("d_embeddings", &x.grad(), &theirs["d_embeddings"]));
    worst = worst.max(close("d_weights", &w.grad(), &theirs["d_weights"]));
    if let Some(d) = theirs.get("d_centers") {
        worst = worst.max(close("d_centers", &c.grad(), d));
    } else {
        assert!(
            !c.grad().defined(),
            "only the softmax-centre loss uses the centres"
        );
    }
    println!(
        "{config}: loss {:.6}, worst difference {worst:e}",
        f64::try_from(&ours).unwrap()
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn arcface_matches_pytorch_including_past_pi() {
    check(
        MarginLoss::arcface(),
        r#"{"type":"arcface","margin":0.5,"scale":64,"easyMargin":false}"#,
    );
}

#[test]
fn arcface_easy_margin_matches_pytorch() {
    check(
        MarginLoss::ArcFace {
            margin: 0.5,
            scale: 64.0,
            easy_margin: true,
        },
        r#"{"type":"arcface","margin":0.5,"scale":64,"easyMargin":true}"#,
    );
}

#[test]
fn cosface_matches_pytorch() {
    check(
        MarginLoss::cosface(),
        r#"{"type":"cosface","margin":0.4,"scale":64}"#,
    );
}

#[test]
fn softmax_center_matches_pytorch() {
    check(
        MarginLoss::SoftmaxCenter { center_weight: 0.5 },
        r#"{"type":"softmax-center","centerWeight":0.5}"#,
    );
}

#[test]
fn past_pi_the_arcface_target_keeps_falling_with_the_angle() {
    // θ_y from 0 to π: the target logit must decrease monotonically (no rise past π − m).
    let w = Tensor::from_slice(&[1f32, 0.0]).reshape([1, 2]);
    let labels = Tensor::from_slice(&[0i64]);
    let mut last = f64::NEG_INFINITY;
    for k in 0..=64 {
        let theta = std::f64::consts::PI * k as f64 / 64.0;
        let x = Tensor::from_slice(&[theta.cos() as f32, theta.sin() as f32]).reshape([1, 2]);
        // With one class the loss is 0; two classes with a fixed rival expose the target logit.
        let w2 = Tensor::cat(&[&w, &Tensor::from_slice(&[0f32, -1.0]).reshape([1, 2])], 0);
        let loss =
            f64::try_from(margin_loss(&MarginLoss::arcface(), &x, &labels, &w2, None).unwrap())
                .unwrap();
        assert!(
            loss >= last - 1e-4,
            "loss fell from {last} to {loss} at θ = {theta}"
        );
        last = loss;
    }
}

#[test]
fn bad_labels_and_shapes_are_clear_errors() {
    let (x, _, w, _) = inputs();
    let labels = Tensor::full([B], C, (Kind::Int64, Device::Cpu));
    let err = margin_loss(&MarginLoss::cosface(), &x, &labels, &w, None).unwrap_err();
    assert!(err.to_string().contains("0..5"), "{err}");
    let err = margin_loss(
        &MarginLoss::cosface(),
        &x,
        &labels.narrow(0, 0, 3),
        &w,
        None,
    )
    .unwrap_err();
    assert!(err.to_string().contains("one class per embedding"), "{err}");
    let labels = Tensor::zeros([B], (Kind::Int64, Device::Cpu));
    let err = margin_loss(&MarginLoss::softmax_center(), &x, &labels, &w, None).unwrap_err();
    assert!(err.to_string().contains("centre"), "{err}");
    let err = margin_loss(
        &MarginLoss::ArcFace {
            margin: 2.0,
            scale: 64.0,
            easy_margin: false,
        },
        &x,
        &labels,
        &w,
        None,
    )
    .unwrap_err();
    assert!(err.to_string().contains("π/2"), "{err}");
}
