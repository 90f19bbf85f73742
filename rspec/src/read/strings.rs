//! Model strings for attribute values, sharing the ones that repeat.
//!
//! A [`SmolStr`] of up to 23 bytes is stored inline and costs no allocation. Longer values
//! (URNs mostly) are kept in a small direct-mapped cache of recent values: a value equal to a
//! cached one shares its allocation instead of making another. In an advertisement the
//! component manager URN, image names and descriptions repeat on every node, and each link
//! names its interfaces' URNs twice. The cache has a fixed size and a miss just replaces a
//! slot, so a hostile document cannot make it grow and a value that never repeats costs a
//! hash, a failed comparison and two reference-count updates. The ids that name one resource
//! each (`component_id` and `sliver_id` of nodes, interfaces and links) do not go through the
//! cache at all.

use smol_str::SmolStr;

/// Slots in the cache (a power of two).
const SLOTS: usize = 256;

/// The longest string [`SmolStr`] stores inline.
const INLINE: usize = 23;

pub(crate) struct Strings {
    slots: Vec<Option<SmolStr>>,
}

impl Strings {
    pub(crate) fn new() -> Self {
        Strings { slots: vec![None; SLOTS] }
    }

    /// A model string equal to `s`, shared with an earlier equal value when one is cached.
    #[inline]
    pub(crate) fn get(&mut self, s: &str) -> SmolStr {
        if s.len() <= INLINE {
            return SmolStr::new_inline(s);
        }
        let slot = &mut self.slots[slot(s.as_bytes())];
        match slot {
            Some(cached) if cached.as_str() == s => cached.clone(),
            _ => {
                let new = SmolStr::new(s);
                *slot = Some(new.clone());
                new
            }
        }
    }
}

/// The cache slot of a string longer than [`INLINE`] bytes: a multiplicative hash of its
/// length, its last eight bytes and eight bytes from its middle (URNs share long prefixes and
/// differ at the end).
fn slot(b: &[u8]) -> usize {
    let n = b.len();
    let word = |at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[at..at + 8]);
        u64::from_le_bytes(w)
    };
    let h = (word(n - 8) ^ word(n / 2 - 4).rotate_left(23) ^ n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (h >> (64 - SLOTS.trailing_zeros())) as usize
}

#[cfg(test)]
mod tests {
    use super::Strings;

    #[test]
    fn long_values_are_shared_and_short_ones_inline() {
        let mut s = Strings::new();
        let urn = "urn:publicid:IDN+big.example.org+authority+cm";
        let a = s.get(urn);
        let copy = String::from(urn);
        let b = s.get(&copy);
        assert_eq!((a.as_str(), b.as_str()), (urn, urn));
        assert!(a.is_heap_allocated() && std::ptr::eq(a.as_str(), b.as_str()));
        let short = s.get("pc12");
        assert!(!short.is_heap_allocated());
        assert_eq!(s.get(""), "");
        // A different value in the same slot replaces it and is still returned exactly.
        for i in 0..2000 {
            let v = format!("urn:publicid:IDN+big.example.org+node+pc{i}");
            assert_eq!(s.get(&v), v);
        }
    }
}
