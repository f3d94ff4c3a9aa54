//! How instants are stored in SQLite's signed 64-bit integer columns: lease expiries (on this
//! boot's `CLOCK_BOOTTIME`, in an order-preserving encoding the expiry index relies on) and
//! wall-clock instants (the `boot` table's, see [`crate::kernel`]).

use lease_core::Timestamp;

/// The top bit, flipped so that a `u64` timestamp orders correctly as SQLite's signed integer.
const SIGN: u64 = 1 << 63;

/// An expiry as stored: nanoseconds minus 2^63, so stored values order as the instants do.
pub(crate) fn encode_expiry(t: Timestamp) -> i64 {
    i64::from_be_bytes((t.as_nanos() ^ SIGN).to_be_bytes())
}

/// A stored expiry back as a timestamp.
pub(crate) fn decode_expiry(v: i64) -> Timestamp {
    Timestamp::from_nanos(u64::from_be_bytes(v.to_be_bytes()) ^ SIGN)
}

/// A wall-clock instant as stored: nanoseconds since the epoch, saturated at `i64::MAX`.
pub(crate) fn wall_column(t: Timestamp) -> i64 {
    i64::try_from(t.as_nanos()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_keep_their_order_when_encoded() {
        let points = [
            0,
            1,
            1_000_000_005,
            (1 << 62) + 3,
            (1 << 63) - 1,
            1 << 63,
            (1 << 63) + 1,
            u64::MAX - 1,
            u64::MAX,
        ];
        for pair in points.windows(2) {
            let (a, b) = (
                Timestamp::from_nanos(pair[0]),
                Timestamp::from_nanos(pair[1]),
            );
            assert!(encode_expiry(a) < encode_expiry(b), "{a} < {b}");
            assert_eq!(decode_expiry(encode_expiry(a)), a);
            assert_eq!(decode_expiry(encode_expiry(b)), b);
        }
        assert_eq!(encode_expiry(Timestamp::ZERO), i64::MIN);
        assert_eq!(encode_expiry(Timestamp::MAX), i64::MAX);
    }
}
