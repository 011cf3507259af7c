//! Shell-style globbing of absolute paths: `*`, `?` and `[..]` within one component; names
//! starting with `.` match only a pattern that starts with `.`.

use std::fs;

/// Existing paths matching `pattern`, sorted.
pub fn expand(pattern: &str) -> Vec<String> {
    let mut current = vec![String::new()];
    for comp in pattern.split('/').filter(|c| !c.is_empty()) {
        let mut next = Vec::new();
        for base in &current {
            let dir = if base.is_empty() { "/" } else { base.as_str() };
            if has_wildcard(comp) {
                let Ok(rd) = fs::read_dir(dir) else { continue };
                for e in rd.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if (name.starts_with('.') && !comp.starts_with('.')) || !matches(comp, &name) {
                        continue;
                    }
                    next.push(format!("{base}/{name}"));
                }
            } else {
                next.push(format!("{base}/{comp}"));
            }
        }
        current = next;
    }
    let mut out: Vec<String> = current
        .into_iter()
        .map(|p| if p.is_empty() { "/".to_string() } else { p })
        .filter(|p| fs::symlink_metadata(p).is_ok())
        .collect();
    out.sort();
    out.dedup();
    out
}

fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Whether `name` matches the one-component `pattern`.
pub fn matches(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    match_at(&p, &n)
}

fn match_at(p: &[char], n: &[char]) -> bool {
    let Some((&first, rest)) = p.split_first() else {
        return n.is_empty();
    };
    match first {
        '*' => (0..=n.len()).any(|i| match_at(rest, &n[i..])),
        '?' => !n.is_empty() && match_at(rest, &n[1..]),
        '[' => match (class(rest), n.split_first()) {
            (Some((ok, after)), Some((&c, tail))) => ok(c) && match_at(after, tail),
            // An unclosed `[` is a literal.
            (None, Some((&c, tail))) => c == '[' && match_at(rest, tail),
            (_, None) => false,
        },
        c => n.first() == Some(&c) && match_at(rest, &n[1..]),
    }
}

type ClassFn<'a> = Box<dyn Fn(char) -> bool + 'a>;

/// Parses a bracket expression body (after `[`): a matcher and what follows `]`.
fn class(p: &[char]) -> Option<(ClassFn<'_>, &[char])> {
    let (negate, body) = match p.first() {
        Some('!') | Some('^') => (true, &p[1..]),
        _ => (false, p),
    };
    // A `]` first in the set is literal.
    let end = body.iter().skip(1).position(|&c| c == ']')? + 1;
    let set = &body[..end];
    let after = &body[end + 1..];
    let f = move |c: char| {
        let mut i = 0;
        let mut hit = false;
        while i < set.len() {
            if i + 2 < set.len() && set[i + 1] == '-' {
                hit |= set[i] <= c && c <= set[i + 2];
                i += 3;
            } else {
                hit |= set[i] == c;
                i += 1;
            }
        }
        hit != negate
    };
    Some((Box::new(f), after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(matches("*.log", "a.log"));
        assert!(!matches("*.log", "a.txt"));
        assert!(matches("a?c", "abc"));
        assert!(matches("[ab]x", "bx"));
        assert!(!matches("[!ab]x", "bx"));
        assert!(matches("[a-c]*", "cat"));
        assert!(matches("[]]", "]"));
        assert!(matches("x[", "x["));
        assert!(matches("*", ""));
    }

    #[test]
    fn expands_in_a_tree() {
        let dir = std::env::temp_dir().join(format!("agent-glob-{}", std::process::id()));
        fs::create_dir_all(dir.join("g")).expect("mkdir");
        for f in ["a.log", "b.log", "c.txt", ".h.log"] {
            fs::write(dir.join("g").join(f), b"x").expect("write");
        }
        let d = dir.to_string_lossy();
        let got = expand(&format!("{d}/g/*.log"));
        assert_eq!(got, [format!("{d}/g/a.log"), format!("{d}/g/b.log")]);
        assert!(expand(&format!("{d}/*/*.none")).is_empty());
        assert_eq!(expand(&format!("{d}/g/c.txt")), [format!("{d}/g/c.txt")]);
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
