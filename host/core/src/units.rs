//! How durations and byte counts read in messages (`2s`, `200ms`, `64 MiB`) and in
//! arguments and files (`500ms`, `7d`, `512MiB`).

use std::time::Duration;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// Splits `1.5GiB` into `1.5` and `GiB` (trimmed).
fn number_and_unit(s: &str) -> Option<(f64, &str)> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    Some((num.parse().ok()?, unit.trim()))
}

/// Parses `500ms`, `30s`, `2m`, `1h`, `7d`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = number_and_unit(s)
        .ok_or_else(|| format!("`{s}` is not a duration (try 500ms, 30s, 2m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        other => {
            return Err(format!(
                "unknown duration unit `{other}` in `{s}` (use ms, s, m, h or d)"
            ));
        }
    };
    if secs.is_nan() || secs < 0.001 {
        return Err(format!("`{s}`: the duration must be at least 1ms"));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| format!("`{s}` is too long a duration"))
}

/// Parses `512MiB`, `2GiB`, `1.5GB`, `4096KiB`; a bare number is MiB. Returns bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let (n, unit) =
        number_and_unit(s).ok_or_else(|| format!("`{s}` is not a size (try 512MiB or 2GiB)"))?;
    let mult: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "mib" | "m" => (1u64 << 20) as f64,
        "b" => 1.0,
        "kib" | "k" => 1024.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gib" | "g" => (1u64 << 30) as f64,
        "gb" => 1e9,
        other => {
            return Err(format!(
                "unknown size unit `{other}` in `{s}` (use KiB, MiB or GiB)"
            ));
        }
    };
    let bytes = n * mult;
    if !(1.0..=u64::MAX as f64).contains(&bytes) {
        return Err(format!("`{s}`: the size must be between 1 byte and 16 EiB"));
    }
    Ok(bytes as u64)
}

/// Formats a byte count for messages: `64 MiB`, `2 GiB`, `1.5 MiB`, `1000 bytes`.
pub fn format_bytes(bytes: u64) -> String {
    if bytes >= GIB && bytes.is_multiple_of(GIB) {
        format!("{} GiB", bytes / GIB)
    } else if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= MIB {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    } else {
        format!("{bytes} bytes")
    }
}

/// Formats a duration for messages: `2s`, `200ms`, `1.5s`.
pub fn format_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d < Duration::from_secs(1) && d.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:?}", d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_for_messages() {
        assert_eq!(format_bytes(64 * MIB), "64 MiB");
        assert_eq!(format_bytes(1 << 30), "1 GiB");
        assert_eq!(format_bytes(3 * MIB / 2), "1.5 MiB");
        assert_eq!(format_bytes(1000), "1000 bytes");
        assert_eq!(format_duration(Duration::from_secs(2)), "2s");
        assert_eq!(format_duration(Duration::from_millis(200)), "200ms");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
    }
}
