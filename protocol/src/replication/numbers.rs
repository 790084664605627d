//! Receipt numbers of store sales and returns: unique across stores and node rebuilds without
//! asking anyone, short enough to read out and print, e.g. `BERLIN-000123` or `S1-2-000123`.
//!
//! A number is `{store}-{replica}-{seq}`:
//! - `store`: the store's location without a leading `store-`, letters and digits only, upper
//!   case, at most 12 characters; all digits get an `S` in front (`store-1` → `S1`). It has no
//!   `-`, so it always ends at the first `-`.
//! - `replica`: the node's replica id in upper case, left out when it is the store's own code
//!   (`berlin` at `store-berlin`), and without the store's code in front when it starts with it
//!   (`berlin-2`, a rebuilt node, → `2`).
//! - `seq`: the node's own counter, six digits at least (`R` in front for a return).
//!
//! A replica id is never reused, so two nodes never make the same number — provided a store does
//! not have both a node named `X` and one named `{store}-X` (`2` and `berlin-2` at
//! `store-berlin`), which the naming convention for rebuilt nodes (`berlin-2`, `berlin-3`, …)
//! never produces. Numbers made before this scheme (`berlin-000123`) stay as they were.

use super::ReplicaId;
use crate::ids::LocationId;

/// The most characters of the store's part.
const MAX_STORE_CHARS: usize = 12;

/// The part of a receipt number before its sequence: `BERLIN`, `BERLIN-2`, `S1-2`.
pub fn receipt_prefix(location: &LocationId, replica: &ReplicaId) -> String {
    let loc = location.0.as_str();
    let short = loc
        .get(..6)
        .filter(|p| p.eq_ignore_ascii_case("store-"))
        .map_or(loc, |_| &loc[6..]);
    let mut store: String = short
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(MAX_STORE_CHARS)
        .collect::<String>()
        .to_ascii_uppercase();
    if store.is_empty() || store.chars().all(|c| c.is_ascii_digit()) {
        store.insert(0, 'S');
    }
    let replica = replica.as_str().to_ascii_uppercase();
    if replica == store {
        return store;
    }
    let rest = replica
        .strip_prefix(&store)
        .and_then(|r| r.strip_prefix('-'))
        .filter(|r| !r.is_empty())
        .unwrap_or(&replica);
    format!("{store}-{rest}")
}

/// A sale's receipt number: the prefix and the node's sequence.
pub fn receipt_number(prefix: &str, seq: u64) -> String {
    format!("{prefix}-{seq:06}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_name_the_store_and_the_replica_briefly() {
        let cases = [
            ("store-berlin", "berlin", "BERLIN"),
            ("store-berlin", "berlin-2", "BERLIN-2"),
            ("store-1", "2", "S1-2"),
            ("store-1", "s1", "S1"),
            ("store-hamburg", "hh_altona", "HAMBURG-HH_ALTONA"),
            ("Store-Köln Süd", "koeln", "KLNSD-KOELN"),
            (
                "online-outlet-paris-centre-nord",
                "paris",
                "ONLINEOUTLET-PARIS",
            ),
            ("--", "x", "S-X"),
        ];
        for (location, replica, want) in cases {
            let got = receipt_prefix(&LocationId(location.into()), &ReplicaId(replica.into()));
            assert_eq!(got, want, "{location} / {replica}");
        }
        assert_eq!(receipt_number("S1-2", 123), "S1-2-000123");
        assert_eq!(receipt_number("BERLIN", 1_234_567), "BERLIN-1234567");
    }

    #[test]
    fn different_replicas_never_share_a_prefix() {
        let stores = [
            "store-berlin",
            "store-hamburg",
            "store-1",
            "store-12",
            "berlin",
        ];
        let replicas = [
            "berlin",
            "berlin-2",
            "berlin-3",
            "hamburg",
            "hamburg-2",
            "s1",
            "s12",
            "1-2",
        ];
        let mut seen = std::collections::BTreeMap::new();
        for s in stores {
            for r in replicas {
                let p = receipt_prefix(&LocationId(s.into()), &ReplicaId(r.into()));
                // The same replica at two locations of one code is the same node.
                if let Some(other) = seen.insert(p.clone(), r) {
                    assert_eq!(other, r, "{p}: {other} and {r}");
                }
            }
        }
    }
}
