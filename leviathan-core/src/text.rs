//! Small text helpers shared by error messages.

/// `s` cut to at most `max_chars` characters, with `…` when something was cut, so that error
/// messages quoting user input stay readable.
pub(crate) fn ellipsize(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ellipsize_counts_characters() {
        assert_eq!(super::ellipsize("héllo", 3), "hél…");
        assert_eq!(super::ellipsize("abc", 3), "abc");
    }
}
