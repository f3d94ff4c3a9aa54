//! Summary statistics of measured samples.

/// The sample at quantile `q` (0 to 1) of `sorted`, by nearest rank (index `(len − 1) × q`,
/// rounded): `0.5` is the median (the upper one of an even count), `1.0` the largest. `None`
/// when there are no samples.
#[must_use]
pub fn quantile<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    let last = sorted.len().checked_sub(1)?;
    // `as` saturates, and a q outside 0..=1 is clamped by `min`.
    let i = ((last as f64) * q.clamp(0.0, 1.0)).round() as usize;
    sorted.get(i.min(last)).copied()
}

/// The median of `samples` ([`quantile`] 0.5 once sorted), or the default (zero) when there
/// are none.
#[must_use]
pub fn median<T: Copy + Default + PartialOrd>(mut samples: Vec<T>) -> T {
    sort(&mut samples);
    quantile(&samples, 0.5).unwrap_or_default()
}

/// Sorts `samples` ascending (incomparable values, a NaN, count as equal).
pub fn sort<T: PartialOrd>(samples: &mut [T]) {
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_an_even_count_is_the_upper_one() {
        assert_eq!(median(vec![4, 1, 3, 2]), 3);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(Vec::<u32>::new()), 0);
    }

    #[test]
    fn quantiles_round_to_the_nearest_rank() {
        let sorted: Vec<u32> = (0..=100).collect();
        assert_eq!(quantile(&sorted, 0.99), Some(99));
        assert_eq!(quantile(&sorted, 1.0), Some(100));
        assert_eq!(quantile(&[7], 0.5), Some(7));
        assert_eq!(quantile::<u32>(&[], 0.5), None);
    }
}
