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

/// `--adapt`: the scaler's bounds and pacing, how often it decides, and how often batch
/// jobs' states are asked for.
#[derive(Clone, Debug)]
pub struct Adapt {
    pub config: fabric_core::adapt::AdaptConfig,
    pub interval: std::time::Duration,
    pub poll: std::time::Duration,
}

/// Parses `min=0,max=40,target=5s,interval=1s,cooldown=15s,wait=3,poll=5s` (every key
/// optional; max defaults to 10).
pub fn adapt(s: &str) -> Result<Adapt, String> {
    let mut adapt = Adapt {
        config: fabric_core::adapt::AdaptConfig {
            maximum: 10,
            ..fabric_core::adapt::AdaptConfig::default()
        },
        interval: std::time::Duration::from_secs(1),
        poll: fabric_scheduler::adapt::DEFAULT_POLL,
    };
    let count = |key: &str, v: &str| {
        v.trim()
            .parse::<u32>()
            .map_err(|_| format!("`{key}={v}`: expected a whole number"))
    };
    for pair in s.split(',').filter(|p| !p.trim().is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("`{pair}`: expected KEY=VALUE, like max=40"))?;
        let c = &mut adapt.config;
        match key.trim() {
            "min" => c.minimum = count(key, value)?,
            "max" => c.maximum = count(key, value)?,
            "wait" => c.wait_count = count(key, value)?.max(1),
            "target" => c.target_duration_us = duration(value)?.as_secs_f64() * 1e6,
            "cooldown" => c.cooldown_us = duration(value)?.as_secs_f64() * 1e6,
            "interval" => adapt.interval = duration(value)?,
            "poll" => adapt.poll = duration(value)?,
            other => {
                return Err(format!(
                    "`{other}`: not a setting of --adapt (min, max, target, interval, \
                     cooldown, wait, poll)"
                ));
            }
        }
    }
    let c = &adapt.config;
    if c.minimum > c.maximum {
        return Err(format!("min={} is above max={}", c.minimum, c.maximum));
    }
    if adapt.interval.is_zero() || c.target_duration_us <= 0.0 {
        return Err("interval and target must be longer than zero".into());
    }
    Ok(adapt)
}

#[cfg(test)]
mod adapt_tests {
    use super::*;

    #[test]
    fn adapt_settings_parse_with_clear_errors() {
        let a = adapt("min=1,max=40,target=2s,interval=200ms,cooldown=1s,wait=2,poll=3s").unwrap();
        assert_eq!(a.poll.as_secs(), 3);
        assert_eq!((a.config.minimum, a.config.maximum), (1, 40));
        assert_eq!(a.config.target_duration_us, 2e6);
        assert_eq!(a.config.cooldown_us, 1e6);
        assert_eq!((a.interval.as_millis(), a.config.wait_count), (200, 2));
        assert_eq!(adapt("").unwrap().config.maximum, 10);
        assert!(adapt("max=2,min=3").unwrap_err().contains("above"));
        assert!(adapt("maxx=2").unwrap_err().contains("not a setting"));
        assert!(adapt("max=two").unwrap_err().contains("whole number"));
        assert!(adapt("max").unwrap_err().contains("KEY=VALUE"));
    }
}
