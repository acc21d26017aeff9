//! `text`: word-count tasks for Fabric. `words` maps text to words, `count` turns words into
//! counts and `merge` reduces two sets of counts into one.

use std::collections::BTreeMap;

fabric_sdk::component!("fabric:text/text");

/// The component: implements the world's exports.
struct Text;

impl Guest for Text {
    fn words(s: String) -> Vec<String> {
        s.split_whitespace()
            .map(|word| word.trim_matches(|c: char| c.is_ascii_punctuation()))
            .filter(|word| !word.is_empty())
            .map(str::to_lowercase)
            .collect()
    }

    fn count(words: Vec<String>) -> Vec<(String, u32)> {
        sorted(tally(words.into_iter().map(|word| (word, 1))))
    }

    fn merge(a: Vec<(String, u32)>, b: Vec<(String, u32)>) -> Vec<(String, u32)> {
        sorted(tally(a.into_iter().chain(b)))
    }
}

/// Adds up the counts of each word (saturating at `u32::MAX`).
fn tally(counts: impl IntoIterator<Item = (String, u32)>) -> BTreeMap<String, u32> {
    let mut totals = BTreeMap::new();
    for (word, count) in counts {
        let total: &mut u32 = totals.entry(word).or_default();
        *total = total.saturating_add(count);
    }
    totals
}

/// The counts by count descending, then word ascending.
fn sorted(totals: BTreeMap<String, u32>) -> Vec<(String, u32)> {
    // The map yields words in ascending order and the sort is stable, so ties stay ascending.
    let mut counts: Vec<_> = totals.into_iter().collect();
    counts.sort_by(|(_, a), (_, b)| b.cmp(a));
    counts
}

export!(Text);
