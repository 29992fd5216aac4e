//! Where each item of a batch stands among the batch's distinct keys.

use crate::idempotency::Fingerprint;

/// The distinct keys of a batch's ready items, and where each item's key is among them:
/// plain vectors by index, looked up by binary search, where hash maps and sets of owned
/// keys cost a hash (and a copy of the key) per item and lookup.
pub(super) struct Claims<'k> {
    /// The distinct keys in byte order: what the claim binds, and where its rows are found.
    pub(super) keys: Vec<&'k str>,
    /// The stored fingerprint of each key's leader.
    pub(super) hashes: Vec<[u8; 33]>,
    /// For each ready item (by its place in `ready`), the place of its key in `keys`.
    pub(super) slot: Vec<usize>,
    /// For each key, the ready item that leads it: the first in `ready` with that key.
    pub(super) leader: Vec<usize>,
    /// For each key, whether another item repeats it.
    pub(super) repeated: Vec<bool>,
}

impl<'k> Claims<'k> {
    /// The claims of the `ready` items (their index in `keys`, and their fingerprint).
    pub(super) fn new(keys: &'k [String], ready: &[(usize, Fingerprint)]) -> Self {
        let mut order: Vec<usize> = (0..ready.len()).collect();
        // Stable: of the items of one key, the first in `ready` comes first, and leads.
        order.sort_by_key(|&r| keys[ready[r].0].as_str());
        let mut claims = Claims {
            keys: Vec::with_capacity(ready.len()),
            hashes: Vec::with_capacity(ready.len()),
            slot: vec![0; ready.len()],
            leader: Vec::with_capacity(ready.len()),
            repeated: Vec::with_capacity(ready.len()),
        };
        for r in order {
            let (i, fingerprint) = ready[r];
            let key = keys[i].as_str();
            match claims.repeated.last_mut() {
                Some(repeated) if claims.keys.last() == Some(&key) => *repeated = true,
                _ => {
                    claims.keys.push(key);
                    claims.hashes.push(fingerprint.stored_bytes());
                    claims.leader.push(r);
                    claims.repeated.push(false);
                }
            }
            claims.slot[r] = claims.keys.len() - 1;
        }
        claims
    }

    /// The place of `key` in `keys`.
    pub(super) fn find(&self, key: &str) -> Option<usize> {
        self.keys.binary_search(&key).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_claims_each_key_once_led_by_its_first_item() {
        // Keys with quotes, unicode and a shared prefix, out of order, one repeated thrice
        // and one twice; item 5 has a codec error and is not ready.
        let keys: Vec<String> = [
            "ä-\"7\"", "order-10", "order-1", "ä-\"7\"", "order-1", "x", "ä-\"7\"",
        ]
        .map(str::to_owned)
        .into();
        let print = |n: i32| Fingerprint::of(&n).unwrap();
        let ready: Vec<(usize, Fingerprint)> = [0, 1, 2, 3, 4, 6]
            .into_iter()
            .map(|i| (i, print(i as i32)))
            .collect();
        let claims = Claims::new(&keys, &ready);
        assert_eq!(claims.keys, ["order-1", "order-10", "ä-\"7\""]);
        // Each ready item's key, by place.
        let by_slot: Vec<&str> = claims.slot.iter().map(|&k| claims.keys[k]).collect();
        let expected: Vec<&str> = ready.iter().map(|&(i, _)| keys[i].as_str()).collect();
        assert_eq!(by_slot, expected);
        // The leader is the first ready item of its key, and its fingerprint is stored.
        assert_eq!(claims.leader, [2, 1, 0]);
        assert_eq!(claims.repeated, [true, false, true]);
        assert_eq!(claims.hashes[2], print(0).stored_bytes());
        assert_eq!(claims.hashes[0][1..], print(2).as_bytes()[..]);
        for (k, key) in claims.keys.iter().enumerate() {
            assert_eq!(claims.find(key), Some(k));
        }
        assert_eq!(claims.find("x"), None, "not ready, so not claimed");
        assert_eq!(claims.find("order-"), None);
    }
}
