//! Learned task durations: an exponentially weighted moving average per function.

use std::sync::Arc;

use rustc_hash::FxHashMap;

/// Weight of the newest observation.
const ALPHA: f64 = 0.3;

/// Expected durations, in microseconds, per `component/export`.
#[derive(Debug)]
pub struct Durations {
    default_us: f64,
    slots: FxHashMap<Arc<str>, u32>,
    means: Vec<Option<f64>>,
}

impl Durations {
    /// Durations that assume `default_us` for functions never seen.
    pub fn new(default_us: f64) -> Durations {
        Durations {
            default_us,
            slots: FxHashMap::default(),
            means: Vec::new(),
        }
    }

    /// The slot of a function name (interned once per job and function).
    pub fn slot(&mut self, name: &str) -> u32 {
        if let Some(&s) = self.slots.get(name) {
            return s;
        }
        let s = self.means.len() as u32;
        self.means.push(None);
        self.slots.insert(name.into(), s);
        s
    }

    /// The expected duration of one call.
    pub fn expected(&self, slot: u32) -> f64 {
        self.means[slot as usize].unwrap_or(self.default_us)
    }

    /// Whether the function has run at least once.
    pub fn known(&self, slot: u32) -> bool {
        self.means[slot as usize].is_some()
    }

    /// Learns from one observed call.
    pub fn observe(&mut self, slot: u32, us: f64) {
        if !us.is_finite() || us < 0.0 {
            return; // nonsense from a worker must not poison the estimates
        }
        let m = &mut self.means[slot as usize];
        *m = Some(match *m {
            None => us,
            Some(old) => old + ALPHA * (us - old),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_observation_replaces_default_then_smooths() {
        let mut d = Durations::new(1000.0);
        let s = d.slot("m/f");
        assert_eq!(d.slot("m/f"), s);
        assert_eq!(d.expected(s), 1000.0);
        d.observe(s, 10.0);
        assert_eq!(d.expected(s), 10.0);
        d.observe(s, 20.0);
        assert!((d.expected(s) - 13.0).abs() < 1e-9);
    }
}
