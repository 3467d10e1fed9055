//! The BPE merge loop on one pre-token.

use std::collections::BinaryHeap;

use super::byte_level::byte_to_char;
use super::Tokenizer;

impl Tokenizer {
    /// BPE on one pre-token: start from one symbol per byte and apply the
    /// lowest-ranked merge until none applies, leftmost first among equals
    /// (Hugging Face's `Word::merge_all`).
    pub(super) fn encode_word(&self, word: &[u8], ids: &mut Vec<u32>) {
        if self.ignore_merges {
            let mapped: String = word.iter().map(|&b| byte_to_char()[b as usize]).collect();
            if let Some(&id) = self.vocab.get(&mapped) {
                ids.push(id);
                return;
            }
        }
        let initial: Vec<u32> = word
            .iter()
            .filter_map(|&b| self.byte_ids[b as usize])
            .collect();
        let mut symbols: Vec<Symbol> = initial
            .iter()
            .enumerate()
            .map(|(i, &id)| Symbol {
                id,
                prev: i.checked_sub(1),
                next: (i + 1 < initial.len()).then_some(i + 1),
                alive: true,
            })
            .collect();
        let mut queue = BinaryHeap::new();
        for i in 0..symbols.len().saturating_sub(1) {
            self.push_candidate(&symbols, i, i + 1, &mut queue);
        }
        while let Some(Candidate { pos, merged, .. }) = queue.pop() {
            let Some(next) = symbols[pos].next.filter(|_| symbols[pos].alive) else {
                continue;
            };
            // Stale entry: one side was merged since it was queued.
            let current = self.merges.get(&(symbols[pos].id, symbols[next].id));
            if current.map(|&(_, m)| m) != Some(merged) {
                continue;
            }
            symbols[pos].id = merged;
            symbols[pos].next = symbols[next].next;
            symbols[next].alive = false;
            if let Some(after) = symbols[next].next {
                symbols[after].prev = Some(pos);
                self.push_candidate(&symbols, pos, after, &mut queue);
            }
            if let Some(before) = symbols[pos].prev {
                self.push_candidate(&symbols, before, pos, &mut queue);
            }
        }
        ids.extend(symbols.iter().filter(|s| s.alive).map(|s| s.id));
    }

    fn push_candidate(
        &self,
        symbols: &[Symbol],
        left: usize,
        right: usize,
        queue: &mut BinaryHeap<Candidate>,
    ) {
        if let Some(&(rank, merged)) = self.merges.get(&(symbols[left].id, symbols[right].id)) {
            queue.push(Candidate {
                rank,
                pos: left,
                merged,
            });
        }
    }
}

struct Symbol {
    id: u32,
    prev: Option<usize>,
    next: Option<usize>,
    alive: bool,
}

/// A possible merge of the symbol at `pos` with its right neighbour.
#[derive(PartialEq, Eq)]
struct Candidate {
    rank: u32,
    pos: usize,
    merged: u32,
}

impl Ord for Candidate {
    // BinaryHeap is a max-heap: reverse so the lowest rank, then the
    // leftmost position, comes out first.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.rank, other.pos).cmp(&(self.rank, self.pos))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
