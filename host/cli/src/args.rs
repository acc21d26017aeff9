//! Parsers for command-line values: durations (`90s`, `500ms`), sizes (`512MiB`), retry
//! counts and resource lists (`gpu=2,fpga=1`).

pub use fabric_core::units::{parse_duration as duration, parse_size as size};

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
    use std::time::Duration;

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
