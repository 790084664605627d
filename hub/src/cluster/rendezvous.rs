//! Which live node should own each shard: rendezvous (highest random weight) hashing with
//! bounded loads. Every node computes the same answer from the same set of live nodes, with
//! no coordination.
//!
//! Each shard ranks the nodes by a hash of (shard, node). Shards are placed in shard order,
//! each on its highest-ranked node that still has room, where a node has room for
//! `ceil(shards / nodes)`. So shares are even (each within `nodes - 1` of the mean), and a
//! node that comes or goes moves little more than its share (plain rendezvous moves exactly
//! its share but leaves shares uneven: ±50 % with 256 shards; see the tests for the bounds).

/// A stable 64-bit mix (splitmix64's finaliser).
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A node id's seed: FNV-1a over its bytes, mixed.
fn seed(node: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix(h)
}

fn weight(shard: u64, seed: u64) -> u64 {
    mix(seed ^ mix(shard))
}

/// The owner of every shard `0..shards`: for shard `s`, the index into `nodes` at `[s]`.
/// `nodes` must be distinct; their order does not matter. Empty when there are no nodes.
pub fn assign(shards: u64, nodes: &[&str]) -> Vec<usize> {
    if nodes.is_empty() {
        return Vec::new();
    }
    // Ranking ties (equal weights) break by node id, so the input order never matters.
    let seeds: Vec<u64> = nodes.iter().map(|n| seed(n)).collect();
    let n = nodes.len() as u64;
    let cap = shards.div_ceil(n);
    let mut load = vec![0u64; nodes.len()];
    let mut ranked: Vec<usize> = (0..nodes.len()).collect();
    (0..shards)
        .map(|s| {
            ranked.sort_by(|&a, &b| {
                weight(s, seeds[b])
                    .cmp(&weight(s, seeds[a]))
                    .then_with(|| nodes[a].cmp(nodes[b]))
            });
            // cap * n >= shards, so some node always has room.
            let owner = ranked
                .iter()
                .copied()
                .find(|&i| load[i] < cap)
                .unwrap_or(ranked[0]);
            load[owner] += 1;
            owner
        })
        .collect()
}

/// The shards `me` should own among `live` (which should include `me`).
pub fn share_of(shards: u64, live: &[&str], me: &str) -> Vec<u64> {
    let Some(mine) = live.iter().position(|n| *n == me) else {
        return Vec::new();
    };
    assign(shards, live)
        .into_iter()
        .zip(0..)
        .filter(|(owner, _)| *owner == mine)
        .map(|(_, shard)| shard)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: u64 = crate::cluster::SHARDS;

    fn nodes(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}-hub-{i}")).collect()
    }

    fn refs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }

    fn owners(names: &[String]) -> Vec<String> {
        assign(S, &refs(names))
            .into_iter()
            .map(|i| names[i].clone())
            .collect()
    }

    #[test]
    fn every_shard_has_one_owner_and_shares_add_up() {
        let names = nodes("a", 3);
        let all: Vec<Vec<u64>> = names
            .iter()
            .map(|me| share_of(S, &refs(&names), me))
            .collect();
        let mut seen: Vec<u64> = all.iter().flatten().copied().collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..S).collect::<Vec<_>>());
        assert!(share_of(S, &refs(&names), "not-live").is_empty());
        assert!(assign(S, &[]).is_empty());
    }

    proptest! {
        #[test]
        fn shares_are_even(prefix in "[a-z]{1,8}", n in 1usize..12) {
            let names = nodes(&prefix, n);
            let mut loads = vec![0u64; n];
            for o in assign(S, &refs(&names)) {
                loads[o] += 1;
            }
            let cap = S.div_ceil(n as u64);
            for load in loads {
                prop_assert!(load <= cap);
                prop_assert!(load + (n as u64 - 1) >= S / n as u64, "load {} of {}", load, n);
            }
        }

        #[test]
        fn the_order_of_nodes_does_not_matter(prefix in "[a-z]{1,8}", n in 1usize..8, rot in 0usize..8) {
            let names = nodes(&prefix, n);
            let mut turned = names.clone();
            turned.rotate_left(rot % n);
            prop_assert_eq!(owners(&names), owners(&turned));
        }

        #[test]
        fn a_joining_node_moves_little_more_than_its_share(prefix in "[a-z]{1,8}", n in 1usize..10) {
            let before = nodes(&prefix, n);
            let mut after = before.clone();
            after.push(format!("{prefix}-new"));
            let (a, b) = (owners(&before), owners(&after));
            let moved = a.iter().zip(&b).filter(|(x, y)| x != y).count() as u64;
            let to_new = b.iter().filter(|o| **o == after[n]).count() as u64;
            // Ideal is exactly what the new node takes; bounded loads cascade a little.
            prop_assert!(moved >= to_new);
            prop_assert!(moved <= 2 * to_new, "moved {} for a share of {}", moved, to_new);
        }

        #[test]
        fn a_leaving_node_moves_little_more_than_its_share(prefix in "[a-z]{1,8}", n in 2usize..10, gone in 0usize..10) {
            let before = nodes(&prefix, n);
            let gone = gone % n;
            let mut after = before.clone();
            let left = after.remove(gone);
            let (a, b) = (owners(&before), owners(&after));
            let had = a.iter().filter(|o| **o == left).count() as u64;
            let moved = a.iter().zip(&b).filter(|(x, y)| x != y).count() as u64;
            prop_assert!(moved >= had);
            prop_assert!(moved <= 2 * had, "moved {} for a share of {}", moved, had);
        }
    }
}
