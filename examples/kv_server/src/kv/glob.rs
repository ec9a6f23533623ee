//! Redis's glob patterns (`KEYS`, `SCAN MATCH`): `*`, `?`, `[abc]`, `[^a]`, `[a-z]`,
//! and `\` to take the next byte literally.

/// Whether `text` matches `pattern`, byte for byte (no case folding).
///
/// ```
/// use kv_server::kv::glob_match;
/// assert!(glob_match(b"user:*", b"user:42"));
/// assert!(glob_match(b"h?llo", b"hallo"));
/// assert!(glob_match(b"h[^e]llo", b"hallo"));
/// assert!(!glob_match(b"h[a-b]llo", b"hello"));
/// assert!(glob_match(b"a\\*b", b"a*b"));
/// ```
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    // Iterative with one backtrack point (the last `*`): linear in practice, and no
    // recursion for a client to blow up with `*********`.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star = Some((p, t));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    t += 1;
                    continue;
                }
                b'[' => {
                    let (matched, next) = class(pattern, p, text[t]);
                    if matched {
                        p = next;
                        t += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pattern.len() && pattern[p + 1] == text[t] => {
                    p += 2;
                    t += 1;
                    continue;
                }
                // A `\\` that does not match what follows it is a mismatch.
                b'\\' if p + 1 < pattern.len() => {}
                c if c == text[t] => {
                    p += 1;
                    t += 1;
                    continue;
                }
                _ => {}
            }
        }
        // Mismatch: let the last `*` swallow one more byte, or fail.
        match star {
            Some((sp, st)) => {
                p = sp + 1;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the class starting at `pattern[open] == b'['`: whether it
/// matched and where the pattern continues. An unterminated class runs to the end of
/// the pattern, as in Redis.
fn class(pattern: &[u8], open: usize, c: u8) -> (bool, usize) {
    let mut i = open + 1;
    let negate = pattern.get(i) == Some(&b'^');
    if negate {
        i += 1;
    }
    let mut matched = false;
    while i < pattern.len() && pattern[i] != b']' {
        if pattern[i] == b'\\' && i + 1 < pattern.len() {
            matched |= pattern[i + 1] == c;
            i += 2;
        } else if i + 2 < pattern.len() && pattern[i + 1] == b'-' && pattern[i + 2] != b']' {
            let (lo, hi) = (
                pattern[i].min(pattern[i + 2]),
                pattern[i].max(pattern[i + 2]),
            );
            matched |= (lo..=hi).contains(&c);
            i += 3;
        } else {
            matched |= pattern[i] == c;
            i += 1;
        }
    }
    // Past the `]` (or at the end of an unterminated class).
    let next = (i + 1).min(pattern.len());
    (matched != negate, next)
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn patterns_as_redis_reads_them() {
        let cases: &[(&[u8], &[u8], bool)] = &[
            (b"*", b"", true),
            (b"*", b"anything", true),
            (b"a*", b"a", true),
            (b"a*c", b"abbbc", true),
            (b"a*c", b"abbb", false),
            (b"*a*b*", b"xxaxxbxx", true),
            (b"?", b"", false),
            (b"[abc]", b"b", true),
            (b"[abc]", b"d", false),
            (b"[^abc]", b"d", true),
            (b"[a-c]x", b"bx", true),
            (b"[c-a]x", b"bx", true),
            (b"[\\]]", b"]", true),
            (b"\\?", b"?", true),
            (b"\\?", b"a", false),
            (b"key:[0-9]*", b"key:7abc", true),
            (b"key:[0-9]*", b"key:x", false),
        ];
        for &(p, t, want) in cases {
            assert_eq!(
                glob_match(p, t),
                want,
                "{:?} on {:?}",
                String::from_utf8_lossy(p),
                String::from_utf8_lossy(t)
            );
        }
    }

    #[test]
    fn many_stars_stay_fast() {
        let pattern = [b'*'; 64].iter().chain(b"x").copied().collect::<Vec<_>>();
        assert!(!glob_match(&pattern, &[b'a'; 10_000]));
    }
}
