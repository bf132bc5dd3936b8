//! Kubernetes resource quantities (`1Gi`, `500M`, `1.5Gi`, `1e9`) as byte counts: claim sizes
//! become volume size limits.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("{0:?} is not a storage size (examples: 1Gi, 500Mi, 2G, 1073741824)")]
pub struct BadQuantity(pub String);

/// Bytes of a quantity, rounded up to a whole byte (as Kubernetes does for storage).
pub fn bytes(q: &str) -> Result<u64, BadQuantity> {
    let bad = || BadQuantity(q.to_owned());
    let s = q.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let (mantissa, exponent) = match suffix {
        "" => (number, 0i32),
        _ if suffix.starts_with(['e', 'E']) => {
            (number, suffix[1..].parse::<i32>().map_err(|_| bad())?)
        }
        _ => (number, 0),
    };
    let factor: u128 = match suffix {
        "" => 1,
        _ if suffix.starts_with(['e', 'E']) => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "E" => 1_000_000_000_000_000_000,
        _ => return Err(bad()),
    };
    let mantissa = mantissa.strip_prefix('+').unwrap_or(mantissa);
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || !(-30..=30).contains(&exponent)
    {
        return Err(bad());
    }
    // value = digits / 10^frac.len() * 10^exponent * factor, in integers, rounded up.
    let digits: u128 = format!("{int}{frac}").parse().map_err(|_| bad())?;
    let mut num = digits.checked_mul(factor).ok_or_else(bad)?;
    let mut den: u128 = 1;
    let scale = exponent - frac.len() as i32;
    for _ in 0..scale.unsigned_abs() {
        if scale > 0 {
            num = num.checked_mul(10).ok_or_else(bad)?;
        } else {
            den *= 10;
        }
    }
    u64::try_from(num.div_ceil(den)).map_err(|_| bad())
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
        assert_eq!(bytes("1073741824"), Ok(1 << 30));
        assert_eq!(bytes("0.5"), Ok(1), "rounded up to a byte");
        assert_eq!(bytes("100k"), Ok(100_000));
        for bad in [
            "",
            "Gi",
            "1GB",
            "-1Gi",
            "1.2.3",
            "1Zi",
            "1e99",
            "99999999Ei",
            "1 Gi",
        ] {
            assert!(bytes(bad).is_err(), "{bad:?}");
        }
    }
}
