//! Parsers for command-line values: durations (`90s`, `500ms`), sizes (`512MiB`), retry
//! counts and resource lists (`gpu=2,fpga=1`).

use std::time::Duration;

/// Splits `1.5GiB` into `1.5` and `GiB` (trimmed).
fn number_and_unit(s: &str) -> Option<(f64, &str)> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    Some((num.parse().ok()?, unit.trim()))
}

/// Parses `500ms`, `30s`, `2m`, `1h`; a bare number is seconds.
pub fn duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = number_and_unit(s)
        .ok_or_else(|| format!("`{s}` is not a duration (try 500ms, 30s, 2m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        other => {
            return Err(format!(
                "unknown duration unit `{other}` in `{s}` (use ms, s, m or h)"
            ));
        }
    };
    if secs.is_nan() || secs < 0.001 {
        return Err(format!("`{s}`: the duration must be at least 1ms"));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| format!("`{s}` is too long a duration"))
}

/// Parses a retry count: 0 to [`fabric_core::MAX_RETRIES`].
pub fn retries(s: &str) -> Result<u32, String> {
    let n: u32 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number of retries"))?;
    if n > fabric_core::MAX_RETRIES {
        return Err(format!(
            "at most {} retries (asked for {n})",
            fabric_core::MAX_RETRIES
        ));
    }
    Ok(n)
}

/// Parses `512MiB`, `2GiB`, `1.5GB`, `4096KiB`; a bare number is MiB. Returns bytes.
pub fn size(s: &str) -> Result<u64, String> {
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

/// Resources a worker offers, e.g. `gpu=2,fpga=1`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources(pub Vec<(String, u32)>);

/// Parses `gpu=2,fpga=1` into name/amount pairs.
pub fn resources(s: &str) -> Result<Resources, String> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|pair| {
            let (name, amount) = pair
                .split_once('=')
                .ok_or_else(|| format!("`{pair}`: expected NAME=AMOUNT, like gpu=2"))?;
            let amount = amount
                .trim()
                .parse()
                .map_err(|_| format!("`{pair}`: the amount must be a whole number"))?;
            let name = name.trim();
            if name.is_empty() {
                return Err(format!("`{pair}`: the resource needs a name"));
            }
            Ok((name.to_string(), amount))
        })
        .collect::<Result<_, _>>()
        .map(Resources)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_values() {
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(duration("3"), Ok(Duration::from_secs(3)));
        assert!(duration("3 days").is_err());
        assert!(duration("100000000000000000000s").is_err());
        assert!(duration("0.0000001ms").is_err());
        assert_eq!(size("512MiB"), Ok(512 << 20));
        assert_eq!(size("2GiB"), Ok(2 << 30));
        assert_eq!(size("64"), Ok(64 << 20));
        assert!(size("lots").is_err());
        assert_eq!(
            resources("gpu=2, fpga=1"),
            Ok(Resources(vec![("gpu".into(), 2), ("fpga".into(), 1)]))
        );
        assert!(resources("gpu").is_err());
    }
}
