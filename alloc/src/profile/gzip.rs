//! gzip output for profiles (pprof reads profiles gzipped), without a compression crate:
//! one gzip member (RFC 1952) around a DEFLATE stream (RFC 1951).
//!
//! The compressor is deliberately plain: LZ77 over a 32 KiB window with hash chains cut at
//! 16 candidates (the scheme RFC 1951 §4 sketches), greedy (no lazy matching),
//! and the fixed Huffman code of RFC 1951 §3.2.6 in a single block. Encoded
//! profiles are mostly repeats (sample keys, location ids, similar addresses), which this
//! catches; the fixed code saves building trees. When the result would be larger than the
//! input (random bytes), the input goes out in stored blocks instead.
//!
//! Memory: the hash chains (256 KiB) are [`OsVec`]s; the output is the caller's
//! [`OsBuf`]. Nothing touches the global allocator.

use tessera_sys::error::OsError;

use super::buf::{OsBuf, OsVec};

// ---- CRC-32 ---------------------------------------------------------------------------------

/// The reflected CRC-32 polynomial of gzip, zlib and Ethernet (RFC 1952 §8).
const CRC_POLY: u32 = 0xedb8_8320;

const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut n = 0;
    while n < 256 {
        let mut c = n as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                CRC_POLY ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[n] = c;
        n += 1;
    }
    table
}

static CRC_TABLE: [u32; 256] = crc_table();

/// The CRC-32 of `data` continued from `crc` (start from 0).
pub fn crc32_update(crc: u32, data: &[u8]) -> u32 {
    let mut c = !crc;
    for &b in data {
        c = CRC_TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// The CRC-32 of `data`, as the gzip trailer carries it.
pub fn crc32(data: &[u8]) -> u32 {
    crc32_update(0, data)
}

// ---- gzip member ----------------------------------------------------------------------------

/// Appends `input` to `out` as one gzip member: a 10-byte header (no name, no time, OS
/// "Unix"), the DEFLATE stream, the CRC-32 and the length mod 2^32.
pub fn gzip(input: &[u8], out: &mut OsBuf) -> Result<(), OsError> {
    // ID1 ID2, CM = 8 (deflate), FLG = 0, MTIME = 0 (none), XFL = 0, OS = 3 (Unix).
    out.extend(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3])?;
    deflate(input, out)?;
    out.extend(&crc32(input).to_le_bytes())?;
    out.extend(&(input.len() as u32).to_le_bytes())
}

// ---- DEFLATE --------------------------------------------------------------------------------

/// Appends a complete DEFLATE stream of `input` to `out`: one fixed-Huffman block, or stored
/// blocks when those come out smaller.
pub fn deflate(input: &[u8], out: &mut OsBuf) -> Result<(), OsError> {
    let start = out.len();
    // Positions live in a `u32` table; larger inputs are simply stored.
    if input.len() < u32::MAX as usize {
        compress_fixed(input, out)?;
        if out.len() - start <= stored_len(input.len()) {
            return Ok(());
        }
        out.truncate(start);
    }
    store(input, out)
}

/// The most bytes one stored block carries (its LEN field is 16 bits).
const STORED_MAX: usize = 0xffff;

/// The size of `len` bytes in stored blocks: five bytes of header per block.
fn stored_len(len: usize) -> usize {
    len + 5 * len.div_ceil(STORED_MAX).max(1)
}

/// Stored blocks (BTYPE 00), each byte-aligned: a header byte (BFINAL, BTYPE, padding),
/// LEN, its complement NLEN, then the bytes.
fn store(input: &[u8], out: &mut OsBuf) -> Result<(), OsError> {
    let mut chunks = input.chunks(STORED_MAX).peekable();
    if chunks.peek().is_none() {
        return out.extend(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        let len = chunk.len() as u16;
        out.push(u8::from(last))?;
        out.extend(&len.to_le_bytes())?;
        out.extend(&(!len).to_le_bytes())?;
        out.extend(chunk)?;
    }
    Ok(())
}

/// Shortest and longest match DEFLATE can express, and how far back it may reach.
const MIN_MATCH: usize = 3;
const MAX_MATCH: usize = 258;
const WINDOW: usize = 32 * 1024;

const HASH_BITS: u32 = 15;

/// A multiplicative hash of the three bytes at the front of `bytes` (Knuth's golden-ratio
/// constant spreads nearby values across the table).
#[inline]
fn hash3(bytes: &[u8]) -> usize {
    let v = u32::from(bytes[0]) | u32::from(bytes[1]) << 8 | u32::from(bytes[2]) << 16;
    (v.wrapping_mul(0x9e37_79b1) >> (32 - HASH_BITS)) as usize
}

/// How many bytes from `a` and `b` (`a < b`) agree, up to `max`.
#[inline]
fn match_len(input: &[u8], a: usize, b: usize, max: usize) -> usize {
    input[a..a + max]
        .iter()
        .zip(&input[b..b + max])
        .take_while(|(x, y)| x == y)
        .count()
}

/// How many earlier positions with the same hash a match search tries.
const MAX_CHAIN: usize = 16;

/// The LZ77 match finder: hash chains over the last [`WINDOW`] bytes.
///
/// `head[h]` is one past the latest position whose three bytes hash to `h` (0: none), and
/// `prev[p % WINDOW]` one past the position before `p` with the same hash, so each chain
/// runs from newest to oldest. Positions are `u32`, one past so that zeroed memory means
/// "none".
struct Matcher {
    head: OsVec<u32>,
    prev: OsVec<u32>,
}

impl Matcher {
    fn new() -> Result<Self, OsError> {
        Ok(Self {
            head: OsVec::filled(0, 1 << HASH_BITS)?,
            prev: OsVec::filled(0, WINDOW)?,
        })
    }

    /// Enters position `i` (which has three bytes after it) into its chain.
    #[inline]
    fn insert(&mut self, input: &[u8], i: usize) {
        let h = hash3(&input[i..]);
        let head = self.head.as_mut_slice();
        self.prev.as_mut_slice()[i % WINDOW] = head[h];
        head[h] = (i + 1) as u32;
    }

    /// The longest earlier match for position `i` within the window, as (length, distance);
    /// length 0 when there is none. Call before `insert(i)`.
    fn longest(&self, input: &[u8], i: usize) -> (usize, usize) {
        let max = MAX_MATCH.min(input.len() - i);
        let (head, prev) = (self.head.as_slice(), self.prev.as_slice());
        let mut best = (0, 0);
        let mut next = head[hash3(&input[i..])] as usize;
        for _ in 0..MAX_CHAIN {
            // Stop at the end of the chain and at positions the window has left behind
            // (whose `prev` slots were reused by newer positions).
            if next == 0 || i - (next - 1) > WINDOW {
                break;
            }
            let from = next - 1;
            // A candidate can only beat `best` if it agrees at `best.0`: a cheap first test.
            if input[from + best.0.min(max - 1)] == input[i + best.0.min(max - 1)] {
                let len = match_len(input, from, i, max);
                if len > best.0 {
                    best = (len, i - from);
                    if len == max {
                        break;
                    }
                }
            }
            next = prev[from % WINDOW] as usize;
        }
        best
    }
}

/// LZ77 over `input`, coded as a single final block with the fixed Huffman code.
fn compress_fixed(input: &[u8], out: &mut OsBuf) -> Result<(), OsError> {
    let mut bits = BitWriter::new(out);
    // BFINAL = 1, BTYPE = 01 (fixed Huffman), least significant bit first.
    bits.put(0b011, 3)?;
    let mut matcher = Matcher::new()?;
    let n = input.len();
    let mut i = 0;
    while i < n {
        if i + MIN_MATCH <= n {
            let (len, dist) = matcher.longest(input, i);
            matcher.insert(input, i);
            if len >= MIN_MATCH {
                bits.length(len)?;
                bits.distance(dist)?;
                // Index the positions inside the match too, so later repeats find them.
                for j in i + 1..(i + len).min(n + 1 - MIN_MATCH) {
                    matcher.insert(input, j);
                }
                i += len;
                continue;
            }
        }
        bits.literal(input[i])?;
        i += 1;
    }
    bits.symbol(END_OF_BLOCK)?;
    bits.flush()
}

// ---- the fixed Huffman code (RFC 1951 §3.2.6) -----------------------------------------------

const END_OF_BLOCK: usize = 256;

/// Huffman codes are defined most significant bit first but packed least significant bit
/// first, so each is stored bit-reversed, ready for `BitWriter::put`.
const fn reverse(code: u32, len: u32) -> u32 {
    code.reverse_bits() >> (32 - len)
}

/// `(code, length)` for each literal/length symbol 0..=287 of the fixed code:
/// 0–143 take 8 bits from 0x30, 144–255 take 9 from 0x190, 256–279 take 7 from 0,
/// 280–287 take 8 from 0xc0.
const fn fixed_lit_codes() -> [(u16, u8); 288] {
    let mut t = [(0u16, 0u8); 288];
    let mut s = 0;
    while s < 288 {
        let (code, len) = if s < 144 {
            (0x30 + s, 8)
        } else if s < 256 {
            (0x190 + s - 144, 9)
        } else if s < 280 {
            (s - 256, 7)
        } else {
            (0xc0 + s - 280, 8)
        };
        t[s] = (reverse(code as u32, len) as u16, len as u8);
        s += 1;
    }
    t
}

static FIXED_LIT: [(u16, u8); 288] = fixed_lit_codes();

/// Length symbols 257..=285: the first length each covers, and its extra bits.
const LEN_BASE: [u16; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
const LEN_EXTRA: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];

/// For each match length 0..=258, the index into `LEN_BASE` of the symbol that codes it
/// (the last base not above it; 258 has a symbol of its own).
const fn len_index_table() -> [u8; MAX_MATCH + 1] {
    let mut t = [0u8; MAX_MATCH + 1];
    let mut len = MIN_MATCH;
    let mut idx = 0;
    while len <= MAX_MATCH {
        while idx + 1 < LEN_BASE.len() && LEN_BASE[idx + 1] as usize <= len {
            idx += 1;
        }
        t[len] = idx as u8;
        len += 1;
    }
    t
}

static LEN_INDEX: [u8; MAX_MATCH + 1] = len_index_table();

/// Distance codes 0..=29: the first distance each covers. Code `c >= 2` has `c / 2 - 1`
/// extra bits.
const DIST_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];

/// The distance code of `dist` (1..=32768). Past the first four, codes come in pairs per
/// power of two: the pair is picked by the top bit of `dist - 1`, the member by the bit
/// below it.
#[inline]
fn dist_code(dist: usize) -> usize {
    let x = dist - 1;
    if x < 4 {
        return x;
    }
    let top = (usize::BITS - 1 - x.leading_zeros()) as usize;
    2 * top + ((x >> (top - 1)) & 1)
}

/// Packs bits least significant first into an [`OsBuf`].
struct BitWriter<'o> {
    out: &'o mut OsBuf,
    acc: u64,
    count: u32,
}

impl<'o> BitWriter<'o> {
    fn new(out: &'o mut OsBuf) -> Self {
        Self {
            out,
            acc: 0,
            count: 0,
        }
    }

    /// Appends the low `len` bits of `value` (`len <= 32`).
    #[inline]
    fn put(&mut self, value: u32, len: u32) -> Result<(), OsError> {
        debug_assert!(len <= 32 && u64::from(value) >> len == 0);
        self.acc |= u64::from(value) << self.count;
        self.count += len;
        if self.count >= 32 {
            self.out.extend(&(self.acc as u32).to_le_bytes())?;
            self.acc >>= 32;
            self.count -= 32;
        }
        Ok(())
    }

    /// Writes out the partial last byte, zero-padded.
    fn flush(&mut self) -> Result<(), OsError> {
        let bytes = self.count.div_ceil(8) as usize;
        self.out.extend(&self.acc.to_le_bytes()[..bytes])?;
        self.acc = 0;
        self.count = 0;
        Ok(())
    }

    #[inline]
    fn symbol(&mut self, symbol: usize) -> Result<(), OsError> {
        let (code, len) = FIXED_LIT[symbol];
        self.put(u32::from(code), u32::from(len))
    }

    #[inline]
    fn literal(&mut self, byte: u8) -> Result<(), OsError> {
        self.symbol(usize::from(byte))
    }

    /// A match length (3..=258): its symbol, then its extra bits.
    #[inline]
    fn length(&mut self, len: usize) -> Result<(), OsError> {
        let idx = usize::from(LEN_INDEX[len]);
        self.symbol(257 + idx)?;
        let extra = u32::from(LEN_EXTRA[idx]);
        self.put((len - usize::from(LEN_BASE[idx])) as u32, extra)
    }

    /// A match distance (1..=32768): its 5-bit code, then its extra bits.
    #[inline]
    fn distance(&mut self, dist: usize) -> Result<(), OsError> {
        let code = dist_code(dist);
        self.put(reverse(code as u32, 5), 5)?;
        let extra = if code < 2 { 0 } else { code as u32 / 2 - 1 };
        self.put((dist - usize::from(DIST_BASE[code])) as u32, extra)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};

    fn gzipped(input: &[u8]) -> OsBuf {
        let mut out = OsBuf::new();
        gzip(input, &mut out).unwrap();
        out
    }

    /// Decompresses with Python's zlib-backed `gzip` module, which checks CRC and ISIZE.
    fn python_gunzip(data: &[u8]) -> Vec<u8> {
        let mut child = Command::new("python3")
            .args([
                "-c",
                "import gzip,sys; sys.stdout.buffer.write(gzip.decompress(sys.stdin.buffer.read()))",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut stdin = child.stdin.take().unwrap();
        let data = data.to_vec();
        let writer = std::thread::spawn(move || stdin.write_all(&data));
        let output = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        assert!(output.status.success(), "python3 could not gunzip");
        output.stdout
    }

    /// xorshift64: reproducible noise without a dependency.
    fn noise(len: usize, mut seed: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    }

    #[test]
    fn crc32_check_value() {
        // The standard check value of CRC-32/ISO-HDLC.
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32_update(crc32(b"1234"), b"56789"), 0xcbf4_3926);
    }

    #[test]
    fn distance_codes_match_the_table() {
        for dist in 1..=WINDOW {
            let c = dist_code(dist);
            let extra = if c < 2 { 0 } else { c / 2 - 1 };
            let base = usize::from(DIST_BASE[c]);
            assert!(base <= dist && dist < base + (1 << extra), "{dist}");
        }
        for (len, &i) in LEN_INDEX.iter().enumerate().skip(MIN_MATCH) {
            let i = usize::from(i);
            let base = usize::from(LEN_BASE[i]);
            assert!(base <= len && len < base + (1 << LEN_EXTRA[i]), "{len}");
        }
        assert_eq!(LEN_INDEX[258], 28);
        assert_eq!(LEN_INDEX[257], 27);
    }

    #[test]
    fn empty_input() {
        let out = gzipped(b"");
        assert_eq!(python_gunzip(out.as_slice()), b"");
        // Header, a fixed block holding only end-of-block (3 + 7 bits), CRC 0, ISIZE 0.
        assert_eq!(out.len(), 10 + 2 + 8);
    }

    #[test]
    fn small_inputs_round_trip() {
        for input in [
            &b"a"[..],
            b"abc",
            b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            b"hello, hello, hello world",
            &[0xff; 300],
            b"\x00\x01\x02\x00\x01\x02\x00\x01\x02\x00\x01",
        ] {
            assert_eq!(python_gunzip(gzipped(input).as_slice()), input);
        }
    }

    #[test]
    fn random_megabyte_is_stored_and_round_trips() {
        let input = noise(1 << 20, 0x9e37_79b9_7f4a_7c15);
        let out = gzipped(&input);
        assert_eq!(out.len(), 10 + stored_len(input.len()) + 8);
        assert_eq!(python_gunzip(out.as_slice()), input);
    }

    #[test]
    fn repetitive_megabyte_compresses_and_round_trips() {
        // Profile-like: runs of similar little records with some noise in them.
        let mut input = Vec::new();
        let noisy = noise(1 << 16, 7);
        let mut k = 0usize;
        while input.len() < 1 << 20 {
            input.extend_from_slice(b"\x0a\x0c\x0a\x04");
            input.extend_from_slice(&(k % 97).to_le_bytes()[..2]);
            input.push(noisy[k % noisy.len()] & 3);
            k += 1;
        }
        input.truncate(1 << 20);
        let out = gzipped(&input);
        assert!(out.len() < input.len() / 4, "{} bytes", out.len());
        assert_eq!(python_gunzip(out.as_slice()), input);
        // Long runs exercise the longest match and distance 1.
        let zeros = vec![0u8; 1 << 20];
        let out = gzipped(&zeros);
        assert!(out.len() < 10_000, "{} bytes", out.len());
        assert_eq!(python_gunzip(out.as_slice()), zeros);
    }

    #[test]
    fn gzip_tool_accepts_the_member() {
        let input = b"tessera tessera tessera profile profile".repeat(100);
        let path = std::env::temp_dir().join(format!("tessera-gzip-{}.gz", std::process::id()));
        std::fs::write(&path, gzipped(&input).as_slice()).unwrap();
        let output = Command::new("gzip").arg("-dc").arg(&path).output();
        std::fs::remove_file(&path).unwrap();
        match output {
            Ok(output) => {
                assert!(output.status.success());
                assert_eq!(output.stdout, input);
            }
            Err(e) => eprintln!("gzip not runnable ({e}); skipped"),
        }
    }
}
