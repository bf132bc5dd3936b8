//! Kubernetes resource quantities (`1Gi`, `500M`, `1.5Gi`, `1e9`) as byte counts: claim sizes
//! become volume size limits.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("{0:?} is not a storage size (examples: 1Gi, 500Mi, 2G, 1073741824)")]
pub struct BadQuantity(pub String);

/// The largest quantity Kubernetes represents as an integer (`Quantity.Value()`): 2^63 - 1.
pub const MAX_BYTES: u64 = i64::MAX as u64;

/// Bytes of a quantity, rounded up to a whole byte (as Kubernetes does for storage).
///
/// Suffixes are Kubernetes': binary `Ki` to `Ei`, decimal `k` to `E`, or a decimal exponent
/// (`1e9`, `5E3`). A value above 2^63 - 1 bytes saturates to [`MAX_BYTES`] (about 8 EiB), as
/// `Quantity.Value()` does in Kubernetes, which accepts such claims: in practice, no limit.
pub fn bytes(q: &str) -> Result<u64, BadQuantity> {
    let bad = || BadQuantity(q.to_owned());
    let s = q.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
        .unwrap_or(s.len());
    let (mantissa, suffix) = s.split_at(split);
    let (factor, exponent): (u128, i32) = match suffix {
        "" => (1, 0),
        "Ki" => (1 << 10, 0),
        "Mi" => (1 << 20, 0),
        "Gi" => (1 << 30, 0),
        "Ti" => (1 << 40, 0),
        "Pi" => (1 << 50, 0),
        "Ei" => (1 << 60, 0),
        "k" => (1, 3),
        "M" => (1, 6),
        "G" => (1, 9),
        "T" => (1, 12),
        "P" => (1, 15),
        "E" => (1, 18),
        // A decimal exponent: `e` or `E` and a signed integer (so `E` alone is exa, above).
        _ => match suffix.strip_prefix(['e', 'E']) {
            Some(exp) if !exp.is_empty() => (1, exp.parse::<i32>().map_err(|_| bad())?),
            _ => return Err(bad()),
        },
    };
    let mantissa = mantissa.strip_prefix('+').unwrap_or(mantissa);
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    // value = digits * factor * 10^scale, rounded up, computed exactly on decimal digits (the
    // input may have any number of them); anything at or above the cap saturates.
    let mut n: Vec<u8> = int.bytes().chain(frac.bytes()).map(|b| b - b'0').collect();
    if factor > 1 {
        let mut carry: u128 = 0;
        for d in n.iter_mut().rev() {
            let v = u128::from(*d) * factor + carry;
            *d = (v % 10) as u8;
            carry = v / 10;
        }
        while carry > 0 {
            n.insert(0, (carry % 10) as u8);
            carry /= 10;
        }
    }
    let Some(first) = n.iter().position(|&d| d != 0) else {
        return Ok(0);
    };
    let n = &n[first..];
    let scale = i64::from(exponent) - frac.len() as i64;
    // Split into the integer part and whether a fraction of a byte is left over.
    let (whole, fraction, zeros) = if scale >= 0 {
        (n, false, scale)
    } else if scale.unsigned_abs() >= n.len() as u64 {
        (&n[..0], true, 0)
    } else {
        let (w, f) = n.split_at(n.len() - scale.unsigned_abs() as usize);
        (w, f.iter().any(|&d| d != 0), 0)
    };
    // 10^20 > 2^63: more digits than that is beyond the cap.
    if whole.len() as i64 + zeros > 20 {
        return Ok(MAX_BYTES);
    }
    let value = whole
        .iter()
        .chain(std::iter::repeat_n(&0, zeros as usize))
        .fold(0u128, |v, &d| v * 10 + u128::from(d))
        + u128::from(fraction);
    Ok(u64::try_from(value).map_or(MAX_BYTES, |v| v.min(MAX_BYTES)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_sizes_parse_like_kubernetes() {
        assert_eq!(bytes("1Gi"), Ok(1 << 30));
        assert_eq!(bytes("500Mi"), Ok(500 << 20));
        assert_eq!(bytes("2G"), Ok(2_000_000_000));
        assert_eq!(bytes("1.5Gi"), Ok(3 << 29));
        assert_eq!(bytes("1e9"), Ok(1_000_000_000));
        assert_eq!(bytes("5E3"), Ok(5_000));
        assert_eq!(bytes("1e-3"), Ok(1), "rounded up to a byte");
        assert_eq!(bytes("1073741824"), Ok(1 << 30));
        assert_eq!(bytes("0.5"), Ok(1), "rounded up to a byte");
        assert_eq!(bytes("100k"), Ok(100_000));
        assert_eq!(bytes("+1Ki"), Ok(1024));
        assert_eq!(bytes("0"), Ok(0));
        assert_eq!(bytes("0.000Gi"), Ok(0));
        assert_eq!(bytes("007Mi"), Ok(7 << 20));
        for bad in [
            "", "Gi", "1GB", "-1Gi", "1.2.3", "1Zi", "1 Gi", "1e", "1E+", "1Eix", "1ei", "e3",
            "1e3Gi", "1K",
        ] {
            assert!(bytes(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn exa_suffixes_are_quantities_not_exponents() {
        assert_eq!(bytes("1Ei"), Ok(1 << 60));
        assert_eq!(bytes("7Ei"), Ok(7 << 60));
        assert_eq!(bytes("9E"), Ok(9_000_000_000_000_000_000));
        assert_eq!(bytes("1E"), Ok(1_000_000_000_000_000_000));
        assert_eq!(bytes("1.5E"), Ok(1_500_000_000_000_000_000));
        assert_eq!(bytes("2E1"), Ok(20), "E followed by digits is an exponent");
    }

    #[test]
    fn sizes_beyond_what_kubernetes_counts_saturate_at_2_pow_63_minus_1() {
        assert_eq!(bytes("9223372036854775807"), Ok(MAX_BYTES));
        assert_eq!(bytes("9223372036854775806"), Ok(MAX_BYTES - 1));
        assert_eq!(bytes("8Ei"), Ok(MAX_BYTES), "2^63 is one past the cap");
        for huge in [
            "9223372036854775808",
            "10E",
            "16Ei",
            "99999999Ei",
            "1e99",
            "1e2147483647",
            "123456789012345678901234567890123456789012345678901234567890",
        ] {
            assert_eq!(bytes(huge), Ok(MAX_BYTES), "{huge}");
        }
        assert_eq!(bytes("1e-99"), Ok(1));
        assert_eq!(
            bytes("1.0000000000000000000000000000000000000000001"),
            Ok(2),
            "a fraction beyond 38 digits still rounds up"
        );
        assert_eq!(
            bytes("2.0000000000000000000000000000000000000000000"),
            Ok(2)
        );
    }
}
