//! Partitioned services: one service spread over N requests streams, each under a hash tag of its own, so that a
//! Redis Cluster can place the N partitions on N different shards.
//!
//! Everything here is pure and deterministic, so that another language computes the same tags and the same
//! partition of an id (the rules are in `docs/protocol.md`, "Partitions"):
//!
//! - **N = 1** is the unpartitioned layout: one [`ServiceKeys`] under `{<namespace>:<service>}`, byte for byte what
//!   a service always had.
//! - **N > 1**: partition `i` (0-based) has the tag `{<namespace>:<service>#<i>.<k>}`, where `k` is the smallest
//!   number in `0..SUFFIX_CANDIDATES` whose tag's cluster slot is nearest to `((2i + 1) × 16384) / (2N)` (integer
//!   division): the middle of the i-th of N equal slot ranges. A balanced cluster of N primaries (what
//!   `redis-cli --cluster create` makes) owns exactly such ranges, so the N partitions land on N different shards.
//! - A request's partition is `CRC16(id) mod N` (CRC16-XMODEM over the id's UTF-8 bytes, the checksum Redis
//!   Cluster uses for key slots): anyone holding the id finds its keys with no lookup.
//! - The service-wide keys that belong to no partition (the heartbeat index and records, the recorded partition
//!   count) stay under the unpartitioned tag `{<namespace>:<service>}` (see [`Partitions::base`]).

use std::sync::Arc;

use super::keys::ServiceKeys;

/// The number of hash slots of a Redis Cluster.
pub const CLUSTER_SLOTS: u16 = 16384;

/// Most partitions a service may have.
pub const MAX_PARTITIONS: usize = 1024;

/// How many suffixes `k` are tried for each partition's tag; the nearest slot among them wins. With 1024 random
/// slots the nearest is typically within a few slots of the target: close enough to stay inside the target's range
/// for any partition count up to [`MAX_PARTITIONS`].
pub const SUFFIX_CANDIDATES: u32 = 1024;

/// CRC16-XMODEM (polynomial 0x1021, initial value 0), the checksum Redis Cluster hashes keys with.
pub fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The cluster slot of `key`, as Redis computes it: CRC16 of the hash tag (the part between the first `{` and the
/// first `}` after it, when not empty) or of the whole key, modulo 16384.
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    crc16(hashed) % CLUSTER_SLOTS
}

/// The partition (0-based) of request `id` in a service of `count` partitions: `CRC16(id) mod count`.
pub fn partition_of(id: &str, count: usize) -> usize {
    if count <= 1 {
        return 0;
    }
    usize::from(crc16(id.as_bytes())) % count
}

/// The slot partition `index` of `count` aims at: the middle of the index-th of `count` equal slot ranges.
pub fn target_slot(index: usize, count: usize) -> u16 {
    let count = count.max(1) as u64;
    (((2 * index as u64 + 1) * u64::from(CLUSTER_SLOTS)) / (2 * count)) as u16
}

/// The hash tag (braces included) of partition `index` of `count` partitions of `service` in `namespace`. With
/// `count` 1 it is the unpartitioned tag `{<namespace>:<service>}`.
pub fn partition_tag(namespace: &str, service: &str, index: usize, count: usize) -> String {
    if count <= 1 {
        return format!("{{{namespace}:{service}}}");
    }
    let target = i32::from(target_slot(index, count));
    let mut best: Option<(i32, String)> = None;
    for k in 0..SUFFIX_CANDIDATES {
        let inner = format!("{namespace}:{service}#{index}.{k}");
        let distance = (i32::from(crc16(inner.as_bytes()) % CLUSTER_SLOTS) - target).abs();
        if best.as_ref().is_none_or(|(d, _)| distance < *d) {
            let exact = distance == 0;
            best = Some((distance, inner));
            if exact {
                break;
            }
        }
    }
    // `SUFFIX_CANDIDATES` > 0, so there is a best one.
    let inner = best.map(|(_, inner)| inner).unwrap_or_default();
    format!("{{{inner}}}")
}

/// The key layout of a service of one or more partitions: the keys of each partition, which partition an id
/// belongs to, and the service-wide keys. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partitions {
    base: Arc<ServiceKeys>,
    parts: Vec<Arc<ServiceKeys>>,
}

impl Partitions {
    /// The layout of `service` in `namespace` with `count` partitions. `count` must be within
    /// `1..=`[`MAX_PARTITIONS`] (checked by the builders that take it; out of range here, it is clamped).
    pub fn new(namespace: &str, service: &str, count: usize) -> Self {
        let count = count.clamp(1, MAX_PARTITIONS);
        let base = Arc::new(ServiceKeys::new(namespace, service));
        let parts = if count == 1 {
            vec![base.clone()]
        } else {
            (0..count)
                .map(|i| {
                    Arc::new(ServiceKeys::with_tag(partition_tag(
                        namespace, service, i, count,
                    )))
                })
                .collect()
        };
        Self { base, parts }
    }

    /// The number of partitions.
    pub fn count(&self) -> usize {
        self.parts.len()
    }

    /// The unpartitioned layout `{<namespace>:<service>}`: with one partition, that partition; with more, where the
    /// service-wide keys live (the heartbeat index and records, and [`ServiceKeys::partition_count`]).
    pub fn base(&self) -> &Arc<ServiceKeys> {
        &self.base
    }

    /// The partition request `id` belongs to.
    pub fn index_of(&self, id: &str) -> usize {
        partition_of(id, self.parts.len())
    }

    /// The keys of request `id`'s partition.
    pub fn for_id(&self, id: &str) -> &Arc<ServiceKeys> {
        &self.parts[self.index_of(id)]
    }

    /// The keys of partition `index`, if there is one.
    pub fn get(&self, index: usize) -> Option<&Arc<ServiceKeys>> {
        self.parts.get(index)
    }

    /// Every partition's keys, in order.
    pub fn all(&self) -> &[Arc<ServiceKeys>] {
        &self.parts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_is_redis_cluster_s() {
        // The check value of CRC16-XMODEM, and slots Redis reports (`CLUSTER KEYSLOT`).
        assert_eq!(crc16(b"123456789"), 0x31c3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(
            key_slot(b"foo{}{bar}"),
            crc16(b"foo{}{bar}") % CLUSTER_SLOTS
        );
    }

    #[test]
    fn one_partition_is_the_unpartitioned_layout() {
        let parts = Partitions::new("redcall", "orders", 1);
        assert_eq!(parts.count(), 1);
        assert_eq!(**parts.for_id("x"), ServiceKeys::new("redcall", "orders"));
        assert_eq!(parts.base(), parts.for_id("y"));
    }

    #[test]
    fn partitions_land_near_evenly_spaced_slots_with_distinct_tags() {
        for count in [2, 3, 4, 5, 8, 16, 64] {
            let parts = Partitions::new("redcall", "orders", count);
            let mut tags: Vec<&str> = parts.all().iter().map(|k| k.tag()).collect();
            for (i, keys) in parts.all().iter().enumerate() {
                let slot = i32::from(key_slot(keys.requests().as_bytes()));
                let target = i32::from(target_slot(i, count));
                // Within its own range of 16384 / count slots.
                let half_range = 16384 / (2 * count as i32);
                assert!(
                    (slot - target).abs() < half_range,
                    "{count} partitions: partition {i} at slot {slot}, target {target}"
                );
                assert!(keys.tag().starts_with(&format!("{{redcall:orders#{i}.")));
            }
            tags.sort_unstable();
            tags.dedup();
            assert_eq!(tags.len(), count);
        }
    }

    #[test]
    fn three_partitions_have_pinned_tags() {
        // Pinned: a change here moves every request of a partitioned service (a change of the protocol).
        let parts = Partitions::new("redcall", "orders", 3);
        let tags: Vec<&str> = parts.all().iter().map(|k| k.tag()).collect();
        assert_eq!(
            tags,
            [
                "{redcall:orders#0.27}",
                "{redcall:orders#1.622}",
                "{redcall:orders#2.446}"
            ]
        );
        let slots: Vec<u16> = tags.iter().map(|t| key_slot(t.as_bytes())).collect();
        assert_eq!(slots, [2729, 8187, 13675]);
        assert_eq!(
            [target_slot(0, 3), target_slot(1, 3), target_slot(2, 3)],
            [2730, 8192, 13653]
        );
    }

    #[test]
    fn ids_spread_over_partitions() {
        let mut counts = [0usize; 3];
        for i in 0..3000 {
            counts[partition_of(&format!("request_{i}"), 3)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
        assert_eq!(partition_of("123456789", 3), 0x31c3 % 3);
        assert_eq!(partition_of("anything", 1), 0);
    }
}
