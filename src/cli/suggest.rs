//! The nearest command or flag to a mistyped one, so `larve tsak` answers "did you mean task?"
//! rather than a page of usage.

/// The candidate nearest `word`, if one is near enough to be what was meant: at most one edit
/// away for a candidate of up to 4 characters, two for a longer one (an edit inserts, deletes or
/// changes a character, or swaps two neighbours, the commonest slip).
pub fn nearest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|candidate| (distance(word, candidate), candidate))
        .filter(|(d, candidate)| {
            let most = if candidate.chars().count() <= 4 { 1 } else { 2 };
            *d <= most && *d < word.chars().count().max(1)
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, candidate)| candidate)
}

/// Edits from `a` to `b` (the optimal string alignment distance: Levenshtein's, and a swap of
/// two neighbouring characters counts as one).
fn distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for i in 0..=a.len() {
        d[i * width] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(width) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[(i - 1) * width + j] + 1)
                .min(d[i * width + j - 1] + 1)
                .min(d[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[(i - 2) * width + j - 2] + 1);
            }
            d[i * width + j] = best;
        }
    }
    d[a.len() * width + b.len()]
}

/// Every flag a help text names (`--queen-host`, `--tls-ca`...), once each, in order.
pub fn flags_in(help: &str) -> Vec<&str> {
    let mut flags: Vec<&str> = Vec::new();
    for word in help.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')) {
        let is_flag = word.len() > 2
            && word.starts_with("--")
            && word[2..]
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'-');
        if is_flag && !flags.contains(&word) {
            flags.push(word);
        }
    }
    flags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slip_finds_what_was_meant_and_nonsense_finds_nothing() {
        let commands = ["task", "drone", "events"];
        for (typed, meant) in [
            ("tsak", Some("task")),
            ("taks", Some("task")),
            ("tas", Some("task")),
            ("drnoe", Some("drone")),
            ("drones", Some("drone")),
            ("evnets", Some("events")),
            ("event", Some("events")),
            ("x", None),
            ("queen", None),
            ("dance", None),
        ] {
            assert_eq!(nearest(typed, commands), meant, "{typed}");
        }
        assert_eq!(nearest("lss", ["run", "get", "ls", "cancel"]), Some("ls"));
        assert_eq!(
            nearest("cancle", ["run", "get", "ls", "cancel"]),
            Some("cancel")
        );
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("abc", "abc"), 0);
        assert_eq!(distance("ab", "ba"), 1);
    }

    #[test]
    fn flags_are_read_from_the_help_itself() {
        let help = "  --queen-host HOST:PORT   the queen\n  --port PORT (default 8080; --port 0)\n  -h, --help";
        assert_eq!(flags_in(help), ["--queen-host", "--port", "--help"]);
        assert_eq!(
            nearest("--queen-hots", flags_in(help)),
            Some("--queen-host")
        );
    }
}
