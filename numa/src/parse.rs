//! Parsers for the few sysfs formats the topology needs, over byte iterators so the same code
//! reads a streamed file and a test's byte string. They never panic: malformed input is an
//! `Err(Malformed)`, and the caller decides what that means (usually "treat as missing").

/// The input did not have the expected shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed;

/// Parses a kernel list such as `0-3,8,10-11\n` (cpulist, node `online`, `has_memory`),
/// calling `f(lo, hi)` for each inclusive range. Empty input (or a lone newline) is the empty
/// list. Numbers saturate at `u64::MAX`; the sets clamp ranges to their capacity.
pub(crate) fn list(
    bytes: impl Iterator<Item = u8>,
    mut f: impl FnMut(u64, u64),
) -> Result<(), Malformed> {
    // States: expecting the start of an item, in the low number, after '-', in the high one.
    let mut lo: Option<u64> = None;
    let mut hi: Option<u64> = None;
    let mut dash = false;
    let mut ended = false;
    let mut flush = |lo: &mut Option<u64>, hi: &mut Option<u64>, dash: &mut bool| {
        let r = match (*lo, *hi, *dash) {
            (None, None, false) => Ok(false),
            (Some(l), None, false) => {
                f(l, l);
                Ok(true)
            }
            (Some(l), Some(h), true) if l <= h => {
                f(l, h);
                Ok(true)
            }
            _ => Err(Malformed),
        };
        *lo = None;
        *hi = None;
        *dash = false;
        r
    };
    for b in bytes {
        if ended {
            if b.is_ascii_whitespace() || b == 0 {
                continue;
            }
            return Err(Malformed);
        }
        match b {
            b'0'..=b'9' => {
                let slot = if dash { &mut hi } else { &mut lo };
                let d = u64::from(b - b'0');
                *slot = Some(slot.unwrap_or(0).saturating_mul(10).saturating_add(d));
            }
            b'-' if lo.is_some() && !dash => dash = true,
            b',' => {
                if !flush(&mut lo, &mut hi, &mut dash)? {
                    return Err(Malformed);
                }
            }
            b'\n' | b' ' | b'\t' | b'\r' | 0 => {
                flush(&mut lo, &mut hi, &mut dash)?;
                ended = true;
            }
            _ => return Err(Malformed),
        }
    }
    if !ended {
        flush(&mut lo, &mut hi, &mut dash)?;
    }
    Ok(())
}

/// Parses whitespace-separated decimal numbers (a node's `distance` row), calling `f` with
/// each in order. A number too large for `u32` is malformed.
pub(crate) fn numbers(
    bytes: impl Iterator<Item = u8>,
    mut f: impl FnMut(u32),
) -> Result<(), Malformed> {
    let mut cur: Option<u32> = None;
    for b in bytes {
        match b {
            b'0'..=b'9' => {
                let v = cur
                    .unwrap_or(0)
                    .checked_mul(10)
                    .and_then(|v| v.checked_add(u32::from(b - b'0')))
                    .ok_or(Malformed)?;
                cur = Some(v);
            }
            b if b.is_ascii_whitespace() || b == 0 => {
                if let Some(v) = cur.take() {
                    f(v);
                }
            }
            _ => return Err(Malformed),
        }
    }
    if let Some(v) = cur {
        f(v);
    }
    Ok(())
}

/// Finds `key` (e.g. `b"MemTotal:"`) in a `meminfo`-style file and returns the number after
/// it (in the file's unit, kB for node meminfo). `None` when the key is absent or no number
/// follows it.
pub(crate) fn field_after(bytes: impl Iterator<Item = u8>, key: &[u8]) -> Option<u64> {
    let mut matched = 0;
    let mut value: Option<u64> = None;
    let mut found = false;
    for b in bytes {
        if found {
            match b {
                b'0'..=b'9' => {
                    let d = u64::from(b - b'0');
                    value = Some(value.unwrap_or(0).saturating_mul(10).saturating_add(d));
                }
                b' ' | b'\t' if value.is_none() => {}
                _ => break,
            }
            continue;
        }
        if key.is_empty() {
            return None;
        }
        // A naive restart is enough: none of the keys we look for has a proper prefix that
        // is also its suffix, so no match can start inside a failed partial match.
        if b == key[matched] {
            matched += 1;
        } else {
            matched = usize::from(b == key[0]);
        }
        if matched == key.len() {
            found = true;
        }
    }
    value
}

/// Parses a byte string that is a decimal number and nothing else, `None` when it is empty,
/// has anything but digits, or does not fit in a `u64`.
pub(crate) fn decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |v, &b| {
        if b.is_ascii_digit() {
            v.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// Undoes the escaping of a path in `/proc/self/mountinfo` (the kernel writes space, tab,
/// newline and backslash as `\ooo` octal), calling `out` with each byte.
pub(crate) fn unescape_octal(s: &[u8], mut out: impl FnMut(u8)) -> Result<(), Malformed> {
    let mut i = 0;
    while i < s.len() {
        if s[i] != b'\\' {
            out(s[i]);
            i += 1;
            continue;
        }
        let code = s.get(i + 1..i + 4).ok_or(Malformed)?;
        let mut v = 0u32;
        for &d in code {
            if !(b'0'..=b'7').contains(&d) {
                return Err(Malformed);
            }
            v = v * 8 + u32::from(d - b'0');
        }
        out(u8::try_from(v).map_err(|_| Malformed)?);
        i += 4;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    fn ranges(s: &[u8]) -> Result<Vec<(u64, u64)>, Malformed> {
        let mut v = Vec::new();
        list(s.iter().copied(), |l, h| v.push((l, h))).map(|()| v)
    }

    #[test]
    fn lists() {
        assert_eq!(ranges(b"0-3,8,10-11\n"), Ok(vec![(0, 3), (8, 8), (10, 11)]));
        assert_eq!(ranges(b"0\n"), Ok(vec![(0, 0)]));
        assert_eq!(ranges(b"5"), Ok(vec![(5, 5)]));
        assert_eq!(ranges(b"\n"), Ok(vec![]));
        assert_eq!(ranges(b""), Ok(vec![]));
        assert_eq!(
            ranges(b"99999999999999999999999-99999999999999999999999\n"),
            Ok(vec![(u64::MAX, u64::MAX)])
        );
    }

    #[test]
    fn malformed_lists() {
        for bad in [
            &b"3-1\n"[..],
            b"1-\n",
            b"-1\n",
            b"1,,2\n",
            b",1\n",
            b"1--2\n",
            b"0-3:2\n",
            b"x\n",
            b"1\n2\n",
            b"1-2-3\n",
        ] {
            assert_eq!(
                ranges(bad),
                Err(Malformed),
                "{:?}",
                core::str::from_utf8(bad)
            );
        }
    }

    #[test]
    fn distance_rows() {
        let mut v = Vec::new();
        numbers(b"10 21 31\n".iter().copied(), |n| v.push(n)).unwrap();
        assert_eq!(v, [10, 21, 31]);
        assert_eq!(numbers(b"10 2x".iter().copied(), |_| ()), Err(Malformed));
        assert_eq!(
            numbers(b"99999999999".iter().copied(), |_| ()),
            Err(Malformed)
        );
    }

    #[test]
    fn meminfo_fields() {
        let text = b"Node 0 MemTotal:        5073112 kB\nNode 0 MemFree:   42 kB\n";
        assert_eq!(
            field_after(text.iter().copied(), b"MemTotal:"),
            Some(5073112)
        );
        assert_eq!(field_after(text.iter().copied(), b"MemFree:"), Some(42));
        assert_eq!(field_after(text.iter().copied(), b"MemUsed:"), None);
        assert_eq!(
            field_after(b"MMemTotal: 7".iter().copied(), b"MemTotal:"),
            Some(7)
        );
        assert_eq!(
            field_after(b"MemTotal: kB".iter().copied(), b"MemTotal:"),
            None
        );
        assert_eq!(field_after(b"".iter().copied(), b"MemTotal:"), None);
    }

    #[test]
    fn decimals() {
        assert_eq!(decimal(b"0"), Some(0));
        assert_eq!(
            decimal(b"9223372036854771712"),
            Some(9_223_372_036_854_771_712)
        );
        assert_eq!(decimal(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(decimal(b"18446744073709551616"), None);
        for bad in [&b""[..], b"-1", b"+1", b" 1", b"1\n", b"max", b"1e3"] {
            assert_eq!(decimal(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn mountinfo_escapes() {
        let unescape = |s: &[u8]| {
            let mut v = Vec::new();
            unescape_octal(s, |b| v.push(b)).map(|()| v)
        };
        assert_eq!(unescape(b"/sys/fs/cgroup"), Ok(b"/sys/fs/cgroup".to_vec()));
        assert_eq!(unescape(b"/a\\040b\\134c\\011"), Ok(b"/a b\\c\t".to_vec()));
        for bad in [&b"/a\\04"[..], b"/a\\", b"/a\\09x", b"\\400"] {
            assert_eq!(unescape(bad), Err(Malformed), "{bad:?}");
        }
    }
}
