//! A SHA-256 whose state can be written down and picked up again: a resumable upload
//! hashes its bytes as they arrive over many requests (on any replica, across restarts)
//! and never reads them back. The state is the eight chaining words, the length so far
//! and the bytes of an unfinished 64-byte block; `sha2::compress256` does the rounds (with
//! the CPU's SHA extensions where it has them).

use sha2::digest::generic_array::GenericArray;

const BLOCK: usize = 64;
const INITIAL: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResumableSha256 {
    state: [u32; 8],
    /// Bytes hashed so far.
    length: u64,
    /// The unfinished block (fewer than 64 bytes).
    pending: Vec<u8>,
}

impl Default for ResumableSha256 {
    fn default() -> Self {
        Self {
            state: INITIAL,
            length: 0,
            pending: Vec::with_capacity(BLOCK),
        }
    }
}

impl ResumableSha256 {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.length
    }

    pub fn is_empty(&self) -> bool {
        self.length == 0
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.length += data.len() as u64;
        if !self.pending.is_empty() {
            let take = (BLOCK - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() < BLOCK {
                return;
            }
            sha2::compress256(
                &mut self.state,
                std::slice::from_ref(GenericArray::from_slice(&self.pending)),
            );
            self.pending.clear();
        }
        let mut blocks = data.chunks_exact(BLOCK);
        for block in &mut blocks {
            // A borrowed view, no copy.
            sha2::compress256(
                &mut self.state,
                std::slice::from_ref(GenericArray::from_slice(block)),
            );
        }
        self.pending.extend_from_slice(blocks.remainder());
    }

    /// The digest of everything hashed, as lowercase hex (the state is left as it was).
    pub fn finish_hex(&self) -> String {
        let mut state = self.state;
        let mut tail = self.pending.clone();
        tail.push(0x80);
        while tail.len() % BLOCK != BLOCK - 8 {
            tail.push(0);
        }
        tail.extend_from_slice(&(self.length.wrapping_mul(8)).to_be_bytes());
        let blocks: Vec<GenericArray<u8, _>> = tail
            .chunks_exact(BLOCK)
            .map(GenericArray::clone_from_slice)
            .collect();
        sha2::compress256(&mut state, &blocks);
        let mut out = String::with_capacity(64);
        for word in state {
            out.push_str(&format!("{word:08x}"));
        }
        out
    }

    /// The state as text: `<8 words hex>:<length>:<pending hex>`.
    pub fn save(&self) -> String {
        let words: String = self.state.iter().map(|w| format!("{w:08x}")).collect();
        format!("{words}:{}:{}", self.length, hex::encode(&self.pending))
    }

    /// A state written by [`save`](Self::save); `None` for anything else.
    pub fn restore(saved: &str) -> Option<Self> {
        let mut parts = saved.split(':');
        let (words, length, pending) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || words.len() != 64 || !words.is_ascii() {
            return None;
        }
        let mut state = [0u32; 8];
        for (i, word) in state.iter_mut().enumerate() {
            *word = u32::from_str_radix(&words[i * 8..i * 8 + 8], 16).ok()?;
        }
        let length: u64 = length.parse().ok()?;
        let pending = hex::decode(pending).ok()?;
        if pending.len() >= BLOCK || length % BLOCK as u64 != pending.len() as u64 {
            return None;
        }
        Some(Self {
            state,
            length,
            pending,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn reference(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    #[test]
    fn digest_matches_sha2_for_lengths_around_block_edges() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in [0, 1, 55, 56, 63, 64, 65, 119, 120, 128, 999] {
            let mut h = ResumableSha256::new();
            h.update(&data[..len]);
            assert_eq!(h.finish_hex(), reference(&data[..len]), "len {len}");
        }
    }

    #[test]
    fn a_saved_state_resumes_to_the_same_digest_at_any_split() {
        let data: Vec<u8> = (0..700u32).map(|i| (i * 13) as u8).collect();
        for split in [0, 1, 63, 64, 100, 699, 700] {
            let mut first = ResumableSha256::new();
            first.update(&data[..split]);
            let mut resumed = ResumableSha256::restore(&first.save()).expect("restores");
            resumed.update(&data[split..]);
            assert_eq!(resumed.finish_hex(), reference(&data), "split {split}");
        }
    }

    #[test]
    fn damaged_states_are_refused() {
        let mut h = ResumableSha256::new();
        h.update(b"hello");
        let saved = h.save();
        assert!(ResumableSha256::restore(&saved).is_some());
        for bad in [
            String::new(),
            saved.replace(":5:", ":6:"),
            format!("{saved}:x"),
            saved[1..].to_string(),
            "zz".repeat(32) + ":0:",
        ] {
            assert!(ResumableSha256::restore(&bad).is_none(), "{bad:?}");
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_chunking_gives_the_sha256_of_the_whole(
                data in proptest::collection::vec(any::<u8>(), 0..600),
                cuts in proptest::collection::vec(0usize..600, 0..6),
            ) {
                let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
                cuts.sort();
                let mut h = ResumableSha256::new();
                let mut at = 0;
                for cut in cuts {
                    h.update(&data[at..cut]);
                    h = ResumableSha256::restore(&h.save()).unwrap();
                    at = cut;
                }
                h.update(&data[at..]);
                prop_assert_eq!(h.finish_hex(), reference(&data));
            }
        }
    }
}
