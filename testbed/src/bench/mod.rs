//! Benchmarks run by `vnsnap-testbed bench ...`; each writes JSON under `target/bench/`,
//! and `bench plot` draws SVG figures from those files.

pub mod net;
pub mod plot;
pub mod restore;
pub mod scale;
pub mod snapshot;
pub mod xen;

/// The `p`-quantile (0..=1, nearest rank) of `v`; 0 for an empty slice.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        return 0.0;
    }
    s[((s.len() - 1) as f64 * p.clamp(0.0, 1.0)).round() as usize]
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentile_takes_the_nearest_rank() {
        assert_eq!(percentile(&[], 0.5), 0.0);
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 0.5), 2.0);
        assert_eq!(percentile(&[3.0, 1.0, 2.0, 4.0], 1.0), 4.0);
        assert_eq!(percentile(&[3.0, 1.0, 2.0, 4.0], 0.0), 1.0);
    }
}
