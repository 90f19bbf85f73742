//! Parsers for typed attribute values. Each returns a message naming what was expected.

use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use crate::model::Netmask;

/// `xs:boolean`: `true`, `false`, `1` or `0` (surrounding whitespace allowed).
pub(crate) fn boolean(s: &str) -> Result<bool, String> {
    match s.trim() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        other => Err(format!("{other:?} is not a boolean (true/false)")),
    }
}

/// An unsigned integer of type `T`; out-of-range values name the type's bounds.
pub(crate) fn unsigned<T: FromStr + std::fmt::Display + Bounded>(s: &str) -> Result<T, String> {
    let t = s.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        t.parse::<T>().map_err(|_| format!("{t} is out of range (0..={})", T::MAX_VALUE))
    } else {
        Err(format!("{t:?} is not a non-negative integer"))
    }
}

/// Types with a printable maximum, for range messages.
pub(crate) trait Bounded {
    /// The largest value.
    const MAX_VALUE: u64;
}

impl Bounded for u16 {
    const MAX_VALUE: u64 = u16::MAX as u64;
}
impl Bounded for u32 {
    const MAX_VALUE: u64 = u32::MAX as u64;
}
impl Bounded for u64 {
    const MAX_VALUE: u64 = u64::MAX;
}

/// `s` as a `T`, if writing that `T` gives `s` back exactly (`512`, not `0512`, `+512` or
/// ` 512`): a value the model may hold as a number without changing the document.
pub(crate) fn canonical<T: FromStr + std::fmt::Display>(s: &str) -> Option<T> {
    let v: T = s.parse().ok()?;
    (v.to_string() == s).then_some(v)
}

/// A VLAN tag, 0..=4095.
pub(crate) fn vlantag(s: &str) -> Result<u16, String> {
    let v: u16 = unsigned(s)?;
    if v > 4095 {
        return Err(format!("VLAN tag {v} is out of range (0..=4095)"));
    }
    Ok(v)
}

/// A finite decimal within `lo..=hi`.
pub(crate) fn decimal_in(s: &str, lo: f64, hi: f64) -> Result<f64, String> {
    let t = s.trim();
    let v: f64 = t.parse().map_err(|_| format!("{t:?} is not a decimal number"))?;
    if !v.is_finite() || v < lo || v > hi {
        return Err(format!("{t} is out of range ({lo}..={hi})"));
    }
    Ok(v)
}

/// Splits a quantity such as `10000000kbps`, `1.5 ms` or `1G` into its decimal number and
/// the unit after it (spaces between them allowed). `None` when it does not start with a
/// non-negative decimal.
fn quantity(s: &str) -> Option<(f64, &str)> {
    let t = s.trim();
    let end = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(end);
    // Rust's float syntax is wider (`inf`, exponents); only plain decimals are numbers here.
    if !num.bytes().any(|b| b.is_ascii_digit()) || num.bytes().filter(|&b| b == b'.').count() > 1 {
        return None;
    }
    let v: f64 = num.parse().ok()?;
    Some((v, unit.trim_start()))
}

/// A finite, non-negative `v` rounded to a `u64`, if it fits.
fn to_u64(v: f64) -> Option<u64> {
    let r = v.round();
    // 2^64 as f64; anything at or above it does not fit.
    (0.0..18_446_744_073_709_551_616.0).contains(&r).then_some(r as u64)
}

/// A link capacity in bits per second. A bare number is kbit/s (the GENI convention); units
/// as real advertisements write them: an SI prefix (k, M, G, T, any case) alone (`1G`) or
/// before `bps`, `bit/s`, `bits/s`, `b/s` or `bit` (bits), or before `Bps`, `B/s`, `byte/s`,
/// `bytes/s` (bytes, times 8). Prefixes are decimal, as in network rates.
pub(crate) fn bandwidth_bps(s: &str) -> Option<u64> {
    let (v, unit) = quantity(s)?;
    if unit.is_empty() {
        return to_u64(v * 1e3);
    }
    let (scale, rest) = match unit.as_bytes()[0] {
        b'k' | b'K' => (1e3, &unit[1..]),
        b'm' | b'M' => (1e6, &unit[1..]),
        b'g' | b'G' => (1e9, &unit[1..]),
        b't' | b'T' => (1e12, &unit[1..]),
        _ => (1.0, unit),
    };
    let per = match rest {
        // Empty only after a prefix (the unit is not empty here).
        "" | "bps" | "bit/s" | "bits/s" | "b/s" | "bit" | "bits" | "b" => 1.0,
        "Bps" | "B/s" | "byte/s" | "bytes/s" | "B" => 8.0,
        _ => return None,
    };
    to_u64(v * scale * per)
}

/// A latency in milliseconds. A bare number is milliseconds; `ns`, `us` (or `µs`), `ms`,
/// `s` and `sec` may follow.
pub(crate) fn latency_ms(s: &str) -> Option<f64> {
    let (v, unit) = quantity(s)?;
    let scale = match unit {
        "" | "ms" => 1.0,
        "s" | "sec" => 1e3,
        "us" | "\u{b5}s" => 1e-3,
        "ns" => 1e-6,
        _ => return None,
    };
    Some(v * scale)
}

/// A packet loss fraction in `0.0..=1.0`: a decimal, or a percentage (`1%`).
pub(crate) fn loss_fraction(s: &str) -> Option<f64> {
    let (v, unit) = quantity(s)?;
    let f = match unit {
        "" => v,
        "%" => v / 100.0,
        _ => return None,
    };
    (0.0..=1.0).contains(&f).then_some(f)
}

/// An IPv4 or IPv6 address.
pub(crate) fn ip(s: &str) -> Result<IpAddr, String> {
    IpAddr::from_str(s.trim()).map_err(|_| format!("{:?} is not an IP address", s.trim()))
}

/// A netmask, dotted with contiguous ones, or a prefix length up to 128.
pub(crate) fn netmask(s: &str) -> Result<Netmask, String> {
    let t = s.trim();
    if t.contains('.') {
        let mask = Ipv4Addr::from_str(t).map_err(|_| format!("{t:?} is not a netmask"))?;
        let bits = u32::from(mask);
        // Contiguous: the ones, inverted, form a run of low bits (x & (x + 1) == 0).
        let inv = !bits;
        if inv & inv.wrapping_add(1) != 0 {
            return Err(format!("{t} is not a contiguous netmask"));
        }
        Ok(Netmask::Dotted(mask))
    } else {
        let len: u16 = unsigned(t).map_err(|_| format!("{t:?} is not a netmask"))?;
        if len > 128 {
            return Err(format!("Prefix length {len} is out of range (0..=128)"));
        }
        Ok(Netmask::PrefixLen(len as u8))
    }
}

/// Whether `s` is a lexically valid `xs:dateTime` (`2025-01-01T12:00:00Z`, optional
/// fraction and offset). Day-of-month is checked against 31 only, as schema tools do loosely.
pub(crate) fn is_datetime(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| r.clone().all(|i| b.get(i).is_some_and(u8::is_ascii_digit));
    let mut i = usize::from(b.first() == Some(&b'-'));
    let year_start = i;
    while b.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    if i - year_start < 4 {
        return false;
    }
    let num = |r: std::ops::Range<usize>| s.get(r).and_then(|x| x.parse::<u32>().ok());
    let ok = b.get(i) == Some(&b'-')
        && digits(i + 1..i + 3)
        && b.get(i + 3) == Some(&b'-')
        && digits(i + 4..i + 6)
        && b.get(i + 6) == Some(&b'T')
        && digits(i + 7..i + 9)
        && b.get(i + 9) == Some(&b':')
        && digits(i + 10..i + 12)
        && b.get(i + 12) == Some(&b':')
        && digits(i + 13..i + 15);
    if !ok {
        return false;
    }
    let (month, day, hour, min, sec) =
        (num(i + 1..i + 3), num(i + 4..i + 6), num(i + 7..i + 9), num(i + 10..i + 12), num(i + 13..i + 15));
    let in_range = matches!(month, Some(1..=12))
        && matches!(day, Some(1..=31))
        && matches!(hour, Some(0..=24))
        && matches!(min, Some(0..=59))
        && matches!(sec, Some(0..=59));
    if !in_range {
        return false;
    }
    let mut j = i + 15;
    if b.get(j) == Some(&b'.') {
        j += 1;
        let start = j;
        while b.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
        if j == start {
            return false;
        }
    }
    match b.get(j) {
        None => true,
        Some(b'Z') => j + 1 == b.len(),
        Some(b'+') | Some(b'-') => {
            j + 6 == b.len()
                && digits(j + 1..j + 3)
                && b[j + 3] == b':'
                && digits(j + 4..j + 6)
                && matches!(num(j + 1..j + 3), Some(0..=14))
                && matches!(num(j + 4..j + 6), Some(0..=59))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_datetimes_real_tools_write() {
        for s in
            ["2025-01-01T12:00:00Z", "2026-11-25T22:46:12+00:00", "2025-01-01T12:00:00.123456Z", "2025-01-01T12:00:00"]
        {
            assert!(is_datetime(s), "{s}");
        }
    }

    #[test]
    fn rejects_malformed_datetimes() {
        for s in [
            "",
            "2025-01-01",
            "2025-13-01T12:00:00Z",
            "2025-01-01 12:00:00Z",
            "2025-01-01T12:00:00Zjunk",
            "2025-01-01T12:00:00+0000",
            "25-01-01T12:00:00Z",
        ] {
            assert!(!is_datetime(s), "{s}");
        }
    }

    #[test]
    fn netmask_accepts_contiguous_and_prefix_forms() {
        assert_eq!(netmask("255.255.255.0").unwrap().prefix_len(), 24);
        assert_eq!(netmask("0.0.0.0").unwrap().prefix_len(), 0);
        assert_eq!(netmask("64").unwrap(), Netmask::PrefixLen(64));
        assert!(netmask("255.0.255.0").is_err());
        assert!(netmask("255.255.255.256").is_err());
        assert!(netmask("129").is_err());
        assert!(netmask("abc").is_err());
    }

    #[test]
    fn bandwidths_with_and_without_units() {
        for (s, bps) in [
            ("100000", Some(100_000_000)),
            ("10000000kbps", Some(10_000_000_000)),
            ("1000000kbps", Some(1_000_000_000)),
            ("1024MB/s", Some(8_192_000_000)),
            ("1G", Some(1_000_000_000)),
            (" 1.5 Gbps ", Some(1_500_000_000)),
            ("100Mbit/s", Some(100_000_000)),
            ("10 bps", Some(10)),
            ("0", Some(0)),
            ("", None),
            ("fast", None),
            ("1X", None),
            ("-5", None),
            ("1e3", None),
            ("inf", None),
            ("1.2.3", None),
            ("99999999999999999999T", None),
        ] {
            assert_eq!(bandwidth_bps(s), bps, "{s:?}");
        }
    }

    #[test]
    fn latencies_and_losses() {
        assert_eq!(latency_ms("20"), Some(20.0));
        assert_eq!(latency_ms("1.5ms"), Some(1.5));
        assert_eq!(latency_ms("2 s"), Some(2000.0));
        assert_eq!(latency_ms("500us"), Some(0.5));
        assert_eq!(latency_ms("x"), None);
        assert_eq!(latency_ms("5 parsecs"), None);
        assert_eq!(loss_fraction("0.010"), Some(0.01));
        assert_eq!(loss_fraction("1%"), Some(0.01));
        assert_eq!(loss_fraction("1.5"), None);
        assert_eq!(loss_fraction(""), None);
    }

    #[test]
    fn unsigned_reports_range() {
        assert_eq!(unsigned::<u16>("22"), Ok(22));
        assert!(unsigned::<u16>("65536").unwrap_err().contains("out of range"));
        assert!(unsigned::<u32>("-1").is_err());
        assert!(vlantag("4096").is_err());
        assert_eq!(vlantag(" 259 "), Ok(259));
    }
}
