//! Stop strings (OpenAI's `stop`): where a generation ends because its text reached one, and
//! how much of a text still being generated may be shown (streamed) without showing the start
//! of a stop string that the next tokens may complete, or half a UTF-8 character. Pure.

/// Most stop strings a request may give (OpenAI's limit).
pub const MAX_STOPS: usize = 4;
/// Longest stop string, in bytes (a cap on outside input: each is searched for every token).
pub const MAX_STOP_BYTES: usize = 256;

/// Check a request's stop strings: at most [`MAX_STOPS`], each 1 to [`MAX_STOP_BYTES`] bytes.
pub fn check(stops: &[String]) -> Result<(), String> {
    if stops.len() > MAX_STOPS {
        return Err(format!(
            "at most {MAX_STOPS} stop sequences, not {}",
            stops.len()
        ));
    }
    match stops
        .iter()
        .find(|s| s.is_empty() || s.len() > MAX_STOP_BYTES)
    {
        Some(s) => Err(format!(
            "a stop sequence has 1 to {MAX_STOP_BYTES} bytes, not {}",
            s.len()
        )),
        None => Ok(()),
    }
}

/// Where the first stop string found in `out` starts, looking only at matches that end at or
/// after byte `new_from` (the bytes added since the last look): each token costs a search of
/// its own bytes and the few before them, not of the whole text.
pub fn find(out: &[u8], stops: &[String], new_from: usize) -> Option<usize> {
    stops
        .iter()
        .filter_map(|s| {
            let s = s.as_bytes();
            if s.is_empty() || s.len() > out.len() {
                return None;
            }
            // A match ending at or after `new_from` starts at or after this.
            let from = new_from.saturating_sub(s.len() - 1).min(out.len());
            out[from..]
                .windows(s.len())
                .position(|w| w == s)
                .map(|p| from + p)
        })
        .min()
}

/// How many bytes of `out` (a generation still going on) may be shown now: whole UTF-8
/// characters only, and not a last part that could be the beginning of a stop string (the
/// next tokens may complete it, and then it is cut from the answer).
pub fn showable(out: &[u8], stops: &[String]) -> usize {
    let held = stops
        .iter()
        .map(|s| {
            let s = s.as_bytes();
            // The longest end of `out` that is a proper beginning of `s`.
            (1..s.len().min(out.len() + 1))
                .rev()
                .find(|&k| out.ends_with(&s[..k]))
                .unwrap_or(0)
        })
        .max()
        .unwrap_or(0);
    let end = out.len() - held;
    match std::str::from_utf8(&out[..end]) {
        Ok(_) => end,
        // An error past the valid prefix is either a character cut by the end (wait for the
        // rest) or bytes that are not UTF-8 at all (the final text shows them replaced).
        Err(e) => e.valid_up_to(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn the_earliest_stop_wins_and_only_new_bytes_are_searched() {
        let stops = s(&["\n\n", "END"]);
        assert_eq!(find(b"abc\n\nxEND", &stops, 0), Some(3));
        assert_eq!(find(b"abcEN", &stops, 4), None);
        // "END" completed by the last byte: found though most of it came before `new_from`.
        assert_eq!(find(b"abcEND", &stops, 5), Some(3));
        // A match that ended before `new_from` was found by an earlier look.
        assert_eq!(find(b"ENDabcdef", &stops, 8), None);
        assert_eq!(find(b"", &stops, 0), None);
        assert_eq!(find(b"x", &[], 0), None);
    }

    #[test]
    fn showable_holds_back_a_possible_stop_and_a_cut_character() {
        let stops = s(&["</answer>"]);
        assert_eq!(showable(b"hello </ans", &stops), 6);
        assert_eq!(showable(b"hello <", &stops), 6);
        assert_eq!(showable(b"hello", &stops), 5);
        // "é" is two bytes; the first alone is held.
        assert_eq!(showable("caf\u{e9}".as_bytes(), &[]), 5);
        assert_eq!(showable(&"caf\u{e9}".as_bytes()[..4], &[]), 3);
        assert_eq!(showable(b"", &stops), 0);
    }

    #[test]
    fn limits_on_stop_strings() {
        assert!(check(&s(&["a", "b", "c", "d"])).is_ok());
        assert!(check(&s(&["a", "b", "c", "d", "e"])).is_err());
        assert!(check(&s(&[""])).is_err());
        assert!(check(&["x".repeat(MAX_STOP_BYTES + 1)]).is_err());
    }

    /// Whatever the stops and however the text arrives, what was shown is a prefix of the
    /// answer the stop leaves (so a stream never shows what the final answer cuts).
    #[test]
    fn what_is_shown_is_always_a_prefix_of_the_final_answer() {
        let stops = s(&["ab", "bba", "\u{e9}x"]);
        let alphabet: Vec<&[u8]> = vec![b"a", b"b", b"c", "\u{e9}".as_bytes(), b"x"];
        let mut seed = 7u64;
        for _ in 0..2000 {
            let mut out: Vec<u8> = Vec::new();
            let mut shown = 0usize;
            let mut ended = None;
            for _ in 0..12 {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let piece = alphabet[(seed >> 33) as usize % alphabet.len()];
                let before = out.len();
                out.extend_from_slice(piece);
                if let Some(at) = find(&out, &stops, before) {
                    ended = Some(at);
                    break;
                }
                let now = showable(&out, &stops);
                assert!(now >= shown, "shown text is never taken back");
                shown = now;
            }
            let answer = match ended {
                Some(at) => &out[..at],
                None => &out[..],
            };
            assert!(shown <= answer.len(), "{out:?}");
            assert_eq!(&out[..shown], &answer[..shown]);
        }
    }
}
