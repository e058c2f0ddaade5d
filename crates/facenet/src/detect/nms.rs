//! The two NMS variants facenet-pytorch uses: torchvision's (IoU without the +1 pixel,
//! for P- and R-Net) and its own numpy one (+1 pixel areas, 'Min' overlap, after O-Net).

/// Box = [x1, y1, x2, y2]; returns kept indices, highest score first.
pub fn nms(boxes: &[[f32; 4]], scores: &[f32], threshold: f32, min_mode: bool) -> Vec<usize> {
    let plus = if min_mode { 1.0 } else { 0.0 };
    let area = |b: &[f32; 4]| (b[2] - b[0] + plus) * (b[3] - b[1] + plus);
    let mut order: Vec<usize> = (0..boxes.len()).collect();
    // facenet-pytorch's numpy NMS takes the last of equal scores (argsort, then I[-1]);
    // equal scores are common after O-Net, where two boxes can give the same crop.
    order.sort_by(|&a, &b| {
        let by_score = scores[b].total_cmp(&scores[a]);
        if min_mode {
            by_score.then(b.cmp(&a))
        } else {
            by_score
        }
    });
    let mut suppressed = vec![false; boxes.len()];
    let mut keep = Vec::new();
    for (pos, &i) in order.iter().enumerate() {
        if suppressed[i] {
            continue;
        }
        keep.push(i);
        let bi = &boxes[i];
        for &j in &order[pos + 1..] {
            if suppressed[j] {
                continue;
            }
            let bj = &boxes[j];
            let w = (bi[2].min(bj[2]) - bi[0].max(bj[0]) + plus).max(0.0);
            let h = (bi[3].min(bj[3]) - bi[1].max(bj[1]) + plus).max(0.0);
            let inter = w * h;
            let overlap = if min_mode {
                inter / area(bi).min(area(bj))
            } else {
                inter / (area(bi) + area(bj) - inter)
            };
            if overlap > threshold {
                suppressed[j] = true;
            }
        }
    }
    keep
}
