//! The per-motor detector states behind the anomaly functions: pure arithmetic, no DataFusion.
//!
//! Every state is fixed-size: a ring of at most `n` trailing values (or vectors) plus a few
//! running sums, so memory per motor is O(n) with `n` a constant of the query. A detector sees
//! one value per window, in window order; [`Detector::step`] scores the value against the state
//! and then folds it in.

use std::collections::VecDeque;

/// A ring of the last `cap` values.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Ring<T> {
    cap: usize,
    items: VecDeque<T>,
}

impl<T> Ring<T> {
    pub(crate) fn new(cap: usize) -> Self {
        Self { cap, items: VecDeque::with_capacity(cap) }
    }

    pub(crate) fn is_full(&self) -> bool {
        self.items.len() == self.cap
    }

    pub(crate) fn push(&mut self, item: T) {
        if self.items.len() == self.cap {
            self.items.pop_front();
        }
        self.items.push_back(item);
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.items.iter()
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }
}

/// Mean and sample standard deviation of a full ring, or `None` with fewer than 2 values.
fn mean_std(ring: &Ring<f32>) -> Option<(f64, f64)> {
    let n = ring.len();
    if n < 2 {
        return None;
    }
    let mean = ring.iter().map(|v| f64::from(*v)).sum::<f64>() / n as f64;
    let var = ring.iter().map(|v| (f64::from(*v) - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    Some((mean, var.sqrt()))
}

/// `(x - mean) / std` of the ring once it is full; `None` before, or when std is 0.
fn trailing_z(ring: &Ring<f32>, x: f64) -> Option<f64> {
    if !ring.is_full() {
        return None;
    }
    let (mean, std) = mean_std(ring)?;
    (std > 0.0).then(|| (x - mean) / std)
}

/// True if a score is beyond the gate, so the value must stay out of the baseline.
fn gated(score: Option<f64>, gate: Option<f64>) -> bool {
    matches!((score, gate), (Some(s), Some(g)) if s.abs() > g)
}

/// One motor's state of one anomaly function call.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) enum Detector {
    /// See [`super::AnomalyKind::ZScore`]. The rings of single values keep them in `f32`
    /// (7 digits, well under a window mean's noise): half the memory of a motor's history.
    ZScore { ring: Ring<f32>, gate: Option<f64> },
    /// See [`super::AnomalyKind::EwmaDev`].
    Ewma { alpha: f64, count: u64, mean: f64, var: f64 },
    /// See [`super::AnomalyKind::Cusum`].
    Cusum { ring: Ring<f32>, k: f64, high: f64, low: f64 },
    /// See [`super::AnomalyKind::Spike`].
    Spike { ring: Ring<f32> },
    /// See [`super::AnomalyKind::TrendSlope`] and [`super::AnomalyKind::TimeToThreshold`].
    Trend { ring: Ring<(f64, f64)>, threshold: Option<f64> },
    /// See [`super::AnomalyKind::HotellingT2`].
    Hotelling { ring: Ring<Vec<f64>>, gate: Option<f64> },
}

impl Detector {
    /// Scores one window's value(s) at `t_s` (seconds) and folds them into the state.
    pub(crate) fn step(&mut self, t_s: f64, x: &[f64]) -> Option<f64> {
        match self {
            Detector::ZScore { ring, gate } => {
                let z = trailing_z(ring, x[0]);
                if !gated(z, *gate) {
                    ring.push(x[0] as f32);
                }
                z
            }
            Detector::Ewma { alpha, count, mean, var } => {
                let x = x[0];
                if *count == 0 {
                    *mean = x;
                    *var = 0.0;
                    *count = 1;
                    return None;
                }
                let d = x - *mean;
                let warm = *count as f64 >= (1.0 / *alpha).ceil();
                let out = (warm && *var > 0.0).then(|| d / var.sqrt());
                *mean += *alpha * d;
                *var = (1.0 - *alpha) * (*var + *alpha * d * d);
                *count += 1;
                out
            }
            Detector::Cusum { ring, k, high, low } => {
                let z = trailing_z(ring, x[0]);
                ring.push(x[0] as f32);
                let z = z?;
                *high = (*high + z - *k).max(0.0);
                *low = (*low - z - *k).max(0.0);
                Some(high.max(*low))
            }
            Detector::Spike { ring } => {
                let out = if ring.is_full() {
                    let mut v: Vec<f64> = ring.iter().map(|v| f64::from(*v)).collect();
                    let med = median(&mut v);
                    let mut dev: Vec<f64> = v.iter().map(|y| (y - med).abs()).collect();
                    let mad = median(&mut dev) * 1.4826;
                    (mad > 0.0).then(|| (x[0] - med) / mad)
                } else {
                    None
                };
                ring.push(x[0] as f32);
                out
            }
            Detector::Trend { ring, threshold } => {
                ring.push((t_s, x[0]));
                if !ring.is_full() || ring.len() < 2 {
                    return None;
                }
                let (slope, fitted_now) = least_squares(ring, t_s)?;
                match threshold {
                    None => Some(slope),
                    Some(thr) => time_to(slope, fitted_now, *thr),
                }
            }
            Detector::Hotelling { ring, gate } => {
                let score = if ring.is_full() { hotelling(ring, x) } else { None };
                if !gated(score.map(f64::sqrt), gate.map(f64::sqrt)) {
                    ring.push(x.to_vec());
                }
                score
            }
        }
    }
}

/// Median of a non-empty slice (reorders it).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// Ordinary least squares over `(t, x)` points: slope per second and the fitted value at `t_now`.
fn least_squares(ring: &Ring<(f64, f64)>, t_now: f64) -> Option<(f64, f64)> {
    let n = ring.len() as f64;
    let (st, sx) = ring.iter().fold((0.0, 0.0), |(a, b), (t, x)| (a + t, b + x));
    let (mt, mx) = (st / n, sx / n);
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (t, x) in ring.iter() {
        sxy += (t - mt) * (x - mx);
        sxx += (t - mt) * (t - mt);
    }
    if sxx == 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    Some((slope, mx + slope * (t_now - mt)))
}

/// Seconds until a line at `fitted_now` with `slope` reaches `threshold`. The threshold is a
/// limit approached from the side the line is on now (an upper limit when below it, a lower
/// limit when above it): `None` if the line is flat or moving away, 0 if it is at the limit.
fn time_to(slope: f64, fitted_now: f64, threshold: f64) -> Option<f64> {
    let gap = threshold - fitted_now;
    if gap == 0.0 {
        return Some(0.0);
    }
    (slope != 0.0 && gap.signum() == slope.signum()).then(|| gap / slope)
}

/// Hotelling T² of `x` against the ring's sample mean and covariance, with a small ridge so a
/// constant channel does not make the covariance singular.
fn hotelling(ring: &Ring<Vec<f64>>, x: &[f64]) -> Option<f64> {
    let k = x.len();
    let n = ring.len();
    if n < 2 || ring.iter().any(|v| v.len() != k) {
        return None;
    }
    let mut mean = vec![0.0; k];
    for v in ring.iter() {
        for (m, vi) in mean.iter_mut().zip(v) {
            *m += vi / n as f64;
        }
    }
    let mut cov = vec![vec![0.0; k]; k];
    for v in ring.iter() {
        for i in 0..k {
            for j in 0..k {
                cov[i][j] += (v[i] - mean[i]) * (v[j] - mean[j]) / (n - 1) as f64;
            }
        }
    }
    let trace: f64 = (0..k).map(|i| cov[i][i]).sum();
    if trace <= 0.0 {
        return None; // a constant baseline: no spread to measure against, like zscore's std 0
    }
    let ridge = 1e-6 * trace / k as f64 + 1e-12;
    for (i, row) in cov.iter_mut().enumerate() {
        row[i] += ridge;
    }
    let d: Vec<f64> = x.iter().zip(&mean).map(|(a, b)| a - b).collect();
    let y = solve(cov, d.clone())?;
    Some(d.iter().zip(&y).map(|(a, b)| a * b).sum())
}

/// Solves `a · y = b` by Gaussian elimination with partial pivoting.
pub(crate) fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let k = b.len();
    for col in 0..k {
        let pivot = (col..k).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-300 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        for row in col + 1..k {
            let f = a[row][col] / a[col][col];
            let (upper, lower) = a.split_at_mut(row);
            for (x, p) in lower[0][col..k].iter_mut().zip(&upper[col][col..k]) {
                *x -= f * p;
            }
            b[row] -= f * b[col];
        }
    }
    let mut y = vec![0.0; k];
    for row in (0..k).rev() {
        let s: f64 = (row + 1..k).map(|c| a[row][c] * y[c]).sum();
        y[row] = (b[row] - s) / a[row][row];
    }
    Some(y)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: Option<f64>, b: f64) {
        let a = a.expect("a score");
        assert!((a - b).abs() < 1e-9, "{a} != {b}");
    }

    #[test]
    fn zscore_uses_the_previous_n_values() {
        let mut d = Detector::ZScore { ring: Ring::new(3), gate: None };
        assert_eq!(d.step(0.0, &[1.0]), None);
        assert_eq!(d.step(1.0, &[2.0]), None);
        assert_eq!(d.step(2.0, &[3.0]), None);
        // baseline 1,2,3: mean 2, sample std 1
        close(d.step(3.0, &[5.0]), 3.0);
        // baseline 2,3,5: mean 10/3, var ((4/3)²+(1/3)²+(5/3)²)/2 = 7/3
        close(d.step(4.0, &[3.0]), (3.0 - 10.0 / 3.0) / (7.0f64 / 3.0).sqrt());
    }

    #[test]
    fn a_gated_zscore_keeps_outliers_out_of_the_baseline() {
        let mut d = Detector::ZScore { ring: Ring::new(3), gate: Some(2.0) };
        for (t, x) in [1.0, 2.0, 3.0].iter().enumerate() {
            d.step(t as f64, &[*x]);
        }
        close(d.step(3.0, &[10.0]), 8.0);
        close(d.step(4.0, &[10.0]), 8.0); // 10 never entered the baseline
    }

    #[test]
    fn ewma_deviation_by_hand() {
        // alpha 0.5: warm-up is 2 values
        let mut d = Detector::Ewma { alpha: 0.5, count: 0, mean: 0.0, var: 0.0 };
        assert_eq!(d.step(0.0, &[10.0]), None); // m=10, v=0
        assert_eq!(d.step(1.0, &[12.0]), None); // count 1 < 2; d=2, m=11, v=0.5*(0+0.5*4)=1
        // d = 14-11 = 3, v=1 → 3
        close(d.step(2.0, &[14.0]), 3.0);
        // m = 12.5, v = 0.5*(1+0.5*9) = 2.75; d = 12.5-12.5 = 0
        close(d.step(3.0, &[12.5]), 0.0);
    }

    #[test]
    fn cusum_accumulates_standardised_shifts() {
        let mut d = Detector::Cusum { ring: Ring::new(3), k: 0.5, high: 0.0, low: 0.0 };
        for (t, x) in [1.0, 2.0, 3.0].iter().enumerate() {
            assert_eq!(d.step(t as f64, &[*x]), None);
        }
        // z = 3 → S+ = 2.5
        close(d.step(3.0, &[5.0]), 2.5);
        // baseline 2,3,5: z = (3-10/3)/sqrt(7/3) = -0.2182; S+ = 2.5-0.2182-0.5 = 1.7818
        let z = (3.0 - 10.0 / 3.0) / (7.0f64 / 3.0).sqrt();
        close(d.step(4.0, &[3.0]), 2.5 + z - 0.5);
    }

    #[test]
    fn spike_is_a_robust_z() {
        let mut d = Detector::Spike { ring: Ring::new(5) };
        for (t, x) in [1.0, 2.0, 3.0, 4.0, 100.0].iter().enumerate() {
            assert_eq!(d.step(t as f64, &[*x]), None);
        }
        // median 3, |dev| = 2,1,0,1,97 → MAD 1 → scale 1.4826
        close(d.step(5.0, &[9.0]), 6.0 / 1.4826);
        // ring now 2,3,4,100,9: median 4, |dev| 2,1,0,96,5 → MAD 2; a dip is negative
        close(d.step(6.0, &[0.0]), -4.0 / (2.0 * 1.4826));
    }

    #[test]
    fn trend_slope_and_time_to_threshold() {
        let mut slope = Detector::Trend { ring: Ring::new(3), threshold: None };
        let mut ttt = Detector::Trend { ring: Ring::new(3), threshold: Some(20.0) };
        for (t, x) in [(0.0, 10.0), (10.0, 11.0)] {
            assert_eq!(slope.step(t, &[x]), None);
            assert_eq!(ttt.step(t, &[x]), None);
        }
        // points (0,10) (10,11) (20,12.5): mean t 10, mean x 11.1667; slope = (−10·−1.1667 + 10·1.3333)/200 = 0.125
        close(slope.step(20.0, &[12.5]), 0.125);
        // fitted at t=20: 11.1667 + 0.125·10 = 12.4167; (20 − 12.4167)/0.125 = 60.667 s
        close(ttt.step(20.0, &[12.5]), (20.0 - (33.5 / 3.0 + 1.25)) / 0.125);
        let mut falling = Detector::Trend { ring: Ring::new(2), threshold: Some(20.0) };
        falling.step(0.0, &[12.0]);
        assert_eq!(falling.step(1.0, &[11.0]), None, "moving away from the threshold");
        let mut to_lower_limit = Detector::Trend { ring: Ring::new(2), threshold: Some(20.0) };
        to_lower_limit.step(0.0, &[30.0]);
        close(to_lower_limit.step(1.0, &[28.0]), 4.0);
    }

    #[test]
    fn hotelling_t2_by_hand() {
        // two independent channels; baseline (0,0) (2,0) (0,2) (2,2): mean (1,1), cov diag(4/3, 4/3)
        let mut d = Detector::Hotelling { ring: Ring::new(4), gate: None };
        for (t, v) in [[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]].iter().enumerate() {
            assert_eq!(d.step(t as f64, v), None);
        }
        // x = (3, 1): d = (2, 0) → T² = 4 / (4/3 + ridge)
        let ridge = 1e-6 * (8.0 / 3.0) / 2.0 + 1e-12;
        close(d.step(4.0, &[3.0, 1.0]), 4.0 / (4.0 / 3.0 + ridge));
    }
}
