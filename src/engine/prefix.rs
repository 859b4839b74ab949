//! Where a new sequence's prompt starts: from nothing, from the cells its own slot kept of an
//! earlier prompt, or from a copy of another slot's cells. Pure.
//!
//! Batch work repeats itself: the system prompt and the task's instruction come first in every
//! document's prompt (`templates::task_messages`), and the chunks of one document share them
//! too. A slot keeps the cells of its last prompt when its sequence ends; a new prompt then
//! skips the tokens it has in common with what a slot holds. Its own slot costs nothing; another
//! slot's cells are copied (llama.cpp copies a whole stream: cheap beside decoding the tokens).

/// Fewest common tokens worth a copy of another slot's cells.
pub const MIN_COPY: usize = 32;

/// Where a new sequence's prompt starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// From its first token.
    Fresh,
    /// Its own slot holds the first `len` tokens: the cells after them are dropped.
    Own { len: usize },
    /// Slot `donor` holds (or, while its own prompt is being fed, will hold) the first `len`
    /// tokens: its cells are copied once it does, and the ones after `len` dropped.
    Copy { donor: usize, len: usize },
}

/// What slot `slot` holds or will hold: the tokens at positions 0.. of its cells.
#[derive(Debug, Clone, Copy)]
pub struct Holder<'a, T> {
    pub slot: usize,
    pub tokens: &'a [T],
}

/// The number of leading tokens `a` and `b` share.
pub fn common_prefix<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// The first of the (slot, length) pairs with the largest length: the same choice for the
/// same holders.
fn first_longest(pairs: impl Iterator<Item = (usize, usize)>) -> Option<(usize, usize)> {
    pairs.fold(None, |best, (s, len)| match best {
        Some((_, b)) if b >= len => best,
        _ => Some((s, len)),
    })
}

/// Where `prompt`, starting in slot `slot`, begins, given what every slot holds (`holders`,
/// its own included). The last token of a prompt is always decoded (its logits choose the
/// first generated token), so at most `prompt.len() - 1` are reused. Another slot is copied only
/// when it offers at least [`MIN_COPY`] tokens more than the slot's own cells.
pub fn choose<T: PartialEq>(prompt: &[T], slot: usize, holders: &[Holder<'_, T>]) -> Start {
    let most = prompt.len().saturating_sub(1);
    let own = holders
        .iter()
        .find(|h| h.slot == slot)
        .map_or(0, |h| common_prefix(prompt, h.tokens).min(most));
    let best = first_longest(
        holders
            .iter()
            .filter(|h| h.slot != slot)
            .map(|h| (h.slot, common_prefix(prompt, h.tokens).min(most))),
    );
    match best {
        Some((donor, len)) if len >= MIN_COPY && len >= own + MIN_COPY => {
            Start::Copy { donor, len }
        }
        _ if own > 0 => Start::Own { len: own },
        _ => Start::Fresh,
    }
}

/// Which free slot a new prompt should take: the one whose kept cells share most with it (so
/// that other slots keep prefixes of other kinds of prompts), else the first that keeps
/// nothing, else the first. `free` are the free slots with what each keeps; `None` when there
/// is none.
pub fn pick_slot<T: PartialEq>(prompt: &[T], free: &[Holder<'_, T>]) -> Option<usize> {
    let best = first_longest(
        free.iter()
            .map(|h| (h.slot, common_prefix(prompt, h.tokens))),
    )?;
    if best.1 > 0 {
        return Some(best.0);
    }
    free.iter()
        .find(|h| h.tokens.is_empty())
        .or(free.first())
        .map(|h| h.slot)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(slot: usize, tokens: &[u32]) -> Holder<'_, u32> {
        Holder { slot, tokens }
    }

    fn seq(prefix: u32, n: usize, tail: u32, m: usize) -> Vec<u32> {
        let mut v: Vec<u32> = (0..n as u32).map(|i| prefix * 1000 + i).collect();
        v.extend((0..m as u32).map(|i| tail * 1000 + i));
        v
    }

    #[test]
    fn a_prompt_starts_from_the_longest_shared_prefix_its_own_slot_first() {
        let a = seq(1, 300, 2, 200);
        let b = seq(1, 300, 3, 150);
        let other = seq(9, 400, 9, 0);
        // Nothing held: fresh.
        assert_eq!(choose(&a, 0, &[]), Start::Fresh);
        assert_eq!(choose(&a, 0, &[h(0, &[]), h(1, &other)]), Start::Fresh);
        // Its own slot holds the instruction: keep it, whatever else holds the same.
        assert_eq!(
            choose(&a, 0, &[h(0, &b), h(1, &b)]),
            Start::Own { len: 300 }
        );
        // Another slot holds it: copy.
        assert_eq!(
            choose(&a, 0, &[h(0, &other), h(1, &b)]),
            Start::Copy { donor: 1, len: 300 }
        );
        // A copy must gain MIN_COPY tokens over the own slot's.
        let short = seq(1, 290, 4, 10);
        assert_eq!(
            choose(&a, 0, &[h(0, &short), h(1, &b)]),
            Start::Own { len: 290 }
        );
        let shorter = seq(1, 300 - MIN_COPY, 4, 10);
        assert_eq!(
            choose(&a, 0, &[h(0, &shorter), h(1, &b)]),
            Start::Copy { donor: 1, len: 300 }
        );
        // Too short to copy.
        let tiny = seq(1, MIN_COPY - 1, 5, 10);
        let tiny2 = seq(1, MIN_COPY - 1, 6, 10);
        assert_eq!(choose(&tiny, 0, &[h(1, &tiny2)]), Start::Fresh);
        // The same prompt again: all but its last token.
        assert_eq!(choose(&a, 0, &[h(0, &a)]), Start::Own { len: a.len() - 1 });
        assert_eq!(
            choose(&a, 0, &[h(1, &a)]),
            Start::Copy {
                donor: 1,
                len: a.len() - 1
            }
        );
        // Of equal donors, the first.
        assert_eq!(
            choose(&a, 2, &[h(0, &b), h(1, &b)]),
            Start::Copy { donor: 0, len: 300 }
        );
        assert_eq!(choose::<u32>(&[], 0, &[h(0, &a)]), Start::Fresh);
    }

    #[test]
    fn a_new_prompt_takes_the_free_slot_that_shares_most_else_an_empty_one() {
        let a = seq(1, 300, 2, 200);
        let b = seq(1, 300, 3, 150);
        let other = seq(9, 400, 9, 0);
        assert_eq!(pick_slot(&a, &[]), None);
        assert_eq!(pick_slot(&a, &[h(0, &other), h(3, &b)]), Some(3));
        assert_eq!(
            pick_slot(&a, &[h(0, &other), h(2, &[]), h(3, &other)]),
            Some(2)
        );
        assert_eq!(pick_slot(&a, &[h(4, &other), h(5, &other)]), Some(4));
    }
}
