//! The pprof encoder: builds a `profile.proto` message
//! (<https://github.com/google/pprof/blob/main/proto/profile.proto>) from samples, for the
//! heap profile here and for the scheduler's goroutine profile.
//!
//! The builder streams: each [`add_sample`](ProfileBuilder::add_sample) encodes its
//! `Sample` message at once into a buffer, resolving strings and addresses to ids through two
//! dedup tables (the string table, where index 0 is always "", and the location table, one
//! location per distinct address). [`finish`](ProfileBuilder::finish) writes the header
//! fields, copies the samples, then emits the mappings, the locations (each tagged with
//! the mapping that covers it) and the string table last, once nothing more can be
//! interned. Field order does not matter to protobuf readers.
//!
//! Locations carry addresses only; the reader symbolises them against the binaries named by
//! the mappings, matched by build ID. All memory comes from [`OsBuf`]/[`OsVec`], so the
//! builder runs inside the allocator. It never panics: stacks longer than [`MAX_FRAMES`]
//! and label lists longer than [`MAX_LABELS`] are cut, value lists are fitted to the sample
//! types, and running out of memory is an `Err`.

use tessera_sys::error::{ENOMEM, OsError};
use tessera_sys::random::mix64;

use super::buf::{OsBuf, OsVec};
use super::gzip;
use super::mappings::{self, Mapping};
use super::proto::ProtoWriter;

/// The deepest stack a sample keeps; deeper ones keep their innermost frames.
pub const MAX_FRAMES: usize = 64;

/// The most labels a sample keeps.
pub const MAX_LABELS: usize = 64;

// Field numbers of profile.proto.
mod field {
    pub(super) const PROFILE_SAMPLE_TYPE: u32 = 1;
    pub(super) const PROFILE_SAMPLE: u32 = 2;
    pub(super) const PROFILE_MAPPING: u32 = 3;
    pub(super) const PROFILE_LOCATION: u32 = 4;
    pub(super) const PROFILE_STRING_TABLE: u32 = 6;
    pub(super) const PROFILE_DROP_FRAMES: u32 = 7;
    pub(super) const PROFILE_KEEP_FRAMES: u32 = 8;
    pub(super) const PROFILE_TIME_NANOS: u32 = 9;
    pub(super) const PROFILE_DURATION_NANOS: u32 = 10;
    pub(super) const PROFILE_PERIOD_TYPE: u32 = 11;
    pub(super) const PROFILE_PERIOD: u32 = 12;
    pub(super) const PROFILE_COMMENT: u32 = 13;
    pub(super) const PROFILE_DEFAULT_SAMPLE_TYPE: u32 = 14;

    pub(super) const VALUE_TYPE_TYPE: u32 = 1;
    pub(super) const VALUE_TYPE_UNIT: u32 = 2;

    pub(super) const SAMPLE_LOCATION_ID: u32 = 1;
    pub(super) const SAMPLE_VALUE: u32 = 2;
    pub(super) const SAMPLE_LABEL: u32 = 3;

    pub(super) const LABEL_KEY: u32 = 1;
    pub(super) const LABEL_STR: u32 = 2;
    pub(super) const LABEL_NUM: u32 = 3;
    pub(super) const LABEL_NUM_UNIT: u32 = 4;

    pub(super) const MAPPING_ID: u32 = 1;
    pub(super) const MAPPING_MEMORY_START: u32 = 2;
    pub(super) const MAPPING_MEMORY_LIMIT: u32 = 3;
    pub(super) const MAPPING_FILE_OFFSET: u32 = 4;
    pub(super) const MAPPING_FILENAME: u32 = 5;
    pub(super) const MAPPING_BUILD_ID: u32 = 6;

    pub(super) const LOCATION_ID: u32 = 1;
    pub(super) const LOCATION_MAPPING_ID: u32 = 2;
    pub(super) const LOCATION_ADDRESS: u32 = 3;
}

/// A sample's call stack, innermost frame first.
#[derive(Clone, Copy, Debug)]
pub enum Stack<'a> {
    /// Every entry is a return address, as `_Unwind_Backtrace` (with `_Unwind_GetIP`) and
    /// frame-pointer walks produce them, the innermost being the unwinder's caller.
    ///
    /// Each is stored as `pc - 1`: a return address points after its call, at what may
    /// be the next line or, after a call that does not return, the next function, and a
    /// symboliser given `pc - 1` names the call itself. profile.proto allows a non-leaf
    /// address inside its call instruction.
    ReturnAddresses(&'a [usize]),
    /// The first entry is an exact instruction address (a signal context's pc, a function's
    /// entry), stored as it is; the rest are return addresses, stored as `pc - 1`.
    ExactLeaf(&'a [usize]),
}

/// A label on a sample (pprof's `Label`), filtered on with `-tagfocus`/`-tagshow`.
///
/// pprof drops a string label whose value is "" and a numeric label whose value is 0 and
/// whose unit is "" (both read as unset).
#[derive(Clone, Copy, Debug)]
pub enum Label<'a> {
    /// A string value, e.g. `("request", "/api")`.
    Str {
        /// The label's name.
        key: &'a str,
        /// Its value.
        value: &'a str,
    },
    /// A number with a unit, e.g. `("bytes", 1024, "bytes")`.
    Num {
        /// The label's name.
        key: &'a str,
        /// Its value.
        value: i64,
        /// Its unit ("" for none); pprof scales "bytes", "seconds" and their multiples.
        unit: &'a str,
    },
}

/// Builds one pprof profile; see the module documentation.
#[derive(Debug)]
pub struct ProfileBuilder {
    strings: StringTable,
    /// (type, unit) string indexes of each value of a sample.
    sample_types: OsVec<(i64, i64)>,
    period_type: (i64, i64),
    period: i64,
    time_nanos: i64,
    duration_nanos: i64,
    drop_frames: i64,
    keep_frames: i64,
    default_sample_type: i64,
    comments: OsVec<i64>,
    /// Encoded `Profile.sample` fields, ready to copy.
    samples: OsBuf,
    sample_count: usize,
    locations: Locations,
    mappings: OsVec<MappingEntry>,
}

/// A mapping with its strings interned.
#[derive(Clone, Copy, Debug)]
struct MappingEntry {
    start: u64,
    limit: u64,
    file_offset: u64,
    filename: i64,
    build_id: i64,
}

impl ProfileBuilder {
    /// A builder for samples with one value per `(type, unit)` of `sample_types` (e.g.
    /// `[("alloc_objects", "count"), ("alloc_space", "bytes")]`), sampled once per `period`
    /// of `period_type` (e.g. `("space", "bytes")` and 524288).
    pub fn new(
        sample_types: &[(&str, &str)],
        period_type: (&str, &str),
        period: i64,
    ) -> Result<Self, OsError> {
        let mut b = Self {
            strings: StringTable::new()?,
            sample_types: OsVec::new(),
            period_type: (0, 0),
            period,
            time_nanos: 0,
            duration_nanos: 0,
            drop_frames: 0,
            keep_frames: 0,
            default_sample_type: 0,
            comments: OsVec::new(),
            samples: OsBuf::new(),
            sample_count: 0,
            locations: Locations::new(),
            mappings: OsVec::new(),
        };
        for &(ty, unit) in sample_types {
            let pair = (
                b.strings.intern(ty.as_bytes())?,
                b.strings.intern(unit.as_bytes())?,
            );
            b.sample_types.push(pair)?;
        }
        b.period_type = (
            b.strings.intern(period_type.0.as_bytes())?,
            b.strings.intern(period_type.1.as_bytes())?,
        );
        Ok(b)
    }

    /// When the profile was taken, in nanoseconds since the Unix epoch.
    pub fn set_time_nanos(&mut self, nanos: i64) {
        self.time_nanos = nanos;
    }

    /// How long the profile covers, in nanoseconds.
    pub fn set_duration_nanos(&mut self, nanos: i64) {
        self.duration_nanos = nanos;
    }

    /// Frames whose function matches this regular expression, and everything above them,
    /// are hidden by readers (the profiler's own frames, say).
    pub fn set_drop_frames(&mut self, regex: &str) -> Result<(), OsError> {
        self.drop_frames = self.strings.intern(regex.as_bytes())?;
        Ok(())
    }

    /// Frames matching this regular expression are kept even when `drop_frames` matches.
    pub fn set_keep_frames(&mut self, regex: &str) -> Result<(), OsError> {
        self.keep_frames = self.strings.intern(regex.as_bytes())?;
        Ok(())
    }

    /// The sample type readers show unless told otherwise (e.g. "inuse_space"); it should
    /// be one of the `sample_types`' names.
    pub fn set_default_sample_type(&mut self, ty: &str) -> Result<(), OsError> {
        self.default_sample_type = self.strings.intern(ty.as_bytes())?;
        Ok(())
    }

    /// A free-form comment, shown by `pprof -comments`.
    pub fn add_comment(&mut self, comment: &str) -> Result<(), OsError> {
        let index = self.strings.intern(comment.as_bytes())?;
        self.comments.push(index)
    }

    /// Adds a mapping; locations inside `start..limit` will refer to it. Add the main
    /// program first: readers take the first mapping for the main binary.
    pub fn add_mapping(&mut self, mapping: &Mapping<'_>) -> Result<(), OsError> {
        let entry = MappingEntry {
            start: mapping.start,
            limit: mapping.limit,
            file_offset: mapping.file_offset,
            filename: self.strings.intern(mapping.filename)?,
            build_id: self.strings.intern(mapping.build_id)?,
        };
        self.mappings.push(entry)
    }

    /// Adds the executable segments of every object loaded in this process, the program
    /// first (`mappings::for_each_mapping`, whose note on locks applies).
    pub fn add_process_mappings(&mut self) -> Result<(), OsError> {
        let mut result = Ok(());
        mappings::for_each_mapping(&mut |m| {
            if result.is_ok() {
                result = self.add_mapping(m);
            }
        });
        result
    }

    /// The number of samples added so far.
    pub fn sample_count(&self) -> usize {
        self.sample_count
    }

    /// Adds a sample: its stack (cut to the innermost [`MAX_FRAMES`]; zero entries are
    /// skipped), one value per sample type (missing values are 0, extra ones ignored), and
    /// its labels (the first [`MAX_LABELS`]). On error the profile is left as it was,
    /// without this sample.
    pub fn add_sample(
        &mut self,
        stack: Stack<'_>,
        values: &[i64],
        labels: &[Label<'_>],
    ) -> Result<(), OsError> {
        let start = self.samples.len();
        let result = self.encode_sample(stack, values, labels);
        match result {
            Ok(()) => self.sample_count = self.sample_count.saturating_add(1),
            Err(_) => self.samples.truncate(start),
        }
        result
    }

    fn encode_sample(
        &mut self,
        stack: Stack<'_>,
        values: &[i64],
        labels: &[Label<'_>],
    ) -> Result<(), OsError> {
        let (pcs, exact_leaf) = match stack {
            Stack::ReturnAddresses(pcs) => (pcs, false),
            Stack::ExactLeaf(pcs) => (pcs, true),
        };
        let mut ids = [0u64; MAX_FRAMES];
        let mut depth = 0;
        for (i, &pc) in pcs.iter().enumerate() {
            if depth == MAX_FRAMES {
                break;
            }
            if pc == 0 {
                continue;
            }
            let address = if i == 0 && exact_leaf { pc } else { pc - 1 };
            ids[depth] = self.locations.id_of(address as u64)?;
            depth += 1;
        }
        let types = self.sample_types.len();
        let mut w = ProtoWriter::new(&mut self.samples);
        let sample = w.begin(field::PROFILE_SAMPLE)?;
        w.packed(field::SAMPLE_LOCATION_ID, ids[..depth].iter().copied())?;
        let values = (0..types).map(|i| values.get(i).copied().unwrap_or(0) as u64);
        w.packed(field::SAMPLE_VALUE, values)?;
        for label in labels.iter().take(MAX_LABELS) {
            let open = w.begin(field::SAMPLE_LABEL)?;
            match *label {
                Label::Str { key, value } => {
                    w.int64(field::LABEL_KEY, self.strings.intern(key.as_bytes())?)?;
                    w.int64(field::LABEL_STR, self.strings.intern(value.as_bytes())?)?;
                }
                Label::Num { key, value, unit } => {
                    w.int64(field::LABEL_KEY, self.strings.intern(key.as_bytes())?)?;
                    w.int64(field::LABEL_NUM, value)?;
                    w.int64(field::LABEL_NUM_UNIT, self.strings.intern(unit.as_bytes())?)?;
                }
            }
            w.end(open)?;
        }
        w.end(sample)
    }

    /// Appends the encoded profile (uncompressed protobuf) to `out`. On error `out` is left
    /// as it was.
    pub fn finish(mut self, out: &mut OsBuf) -> Result<(), OsError> {
        let start = out.len();
        let result = self.encode(out);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    /// Appends the profile gzipped, as pprof's readers and Go's `net/http/pprof` expect it.
    /// On error `out` is left as it was.
    pub fn finish_gzip(self, out: &mut OsBuf) -> Result<(), OsError> {
        let mut raw = OsBuf::new();
        self.finish(&mut raw)?;
        let start = out.len();
        let result = gzip::gzip(raw.as_slice(), out);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    fn encode(&mut self, out: &mut OsBuf) -> Result<(), OsError> {
        // Everything that interns comes before the string table.
        let mut w = ProtoWriter::new(out);
        for &(ty, unit) in self.sample_types.as_slice() {
            value_type(&mut w, field::PROFILE_SAMPLE_TYPE, (ty, unit))?;
        }
        w.buf().extend(self.samples.as_slice())?;
        for (i, m) in self.mappings.as_slice().iter().enumerate() {
            let open = w.begin(field::PROFILE_MAPPING)?;
            w.uint64(field::MAPPING_ID, i as u64 + 1)?;
            w.uint64(field::MAPPING_MEMORY_START, m.start)?;
            w.uint64(field::MAPPING_MEMORY_LIMIT, m.limit)?;
            w.uint64(field::MAPPING_FILE_OFFSET, m.file_offset)?;
            w.int64(field::MAPPING_FILENAME, m.filename)?;
            w.int64(field::MAPPING_BUILD_ID, m.build_id)?;
            w.end(open)?;
        }
        let mut last_hit = 0;
        for (i, &address) in self.locations.addresses.as_slice().iter().enumerate() {
            let open = w.begin(field::PROFILE_LOCATION)?;
            w.uint64(field::LOCATION_ID, i as u64 + 1)?;
            let mapping = self.mapping_of(address, &mut last_hit);
            w.uint64(field::LOCATION_MAPPING_ID, mapping)?;
            w.uint64(field::LOCATION_ADDRESS, address)?;
            w.end(open)?;
        }
        w.int64(field::PROFILE_DROP_FRAMES, self.drop_frames)?;
        w.int64(field::PROFILE_KEEP_FRAMES, self.keep_frames)?;
        w.int64(field::PROFILE_TIME_NANOS, self.time_nanos)?;
        w.int64(field::PROFILE_DURATION_NANOS, self.duration_nanos)?;
        value_type(&mut w, field::PROFILE_PERIOD_TYPE, self.period_type)?;
        w.int64(field::PROFILE_PERIOD, self.period)?;
        let comments = self.comments.as_slice().iter().map(|&c| c as u64);
        w.packed(field::PROFILE_COMMENT, comments)?;
        w.int64(field::PROFILE_DEFAULT_SAMPLE_TYPE, self.default_sample_type)?;
        for s in self.strings.iter() {
            w.bytes(field::PROFILE_STRING_TABLE, s)?;
        }
        Ok(())
    }

    /// The id of the mapping covering `address` (0, "unknown", when none does); `last_hit`
    /// remembers the previous answer, since neighbouring locations share mappings.
    fn mapping_of(&self, address: u64, last_hit: &mut usize) -> u64 {
        let maps = self.mappings.as_slice();
        let covers = |m: &MappingEntry| m.start <= address && address < m.limit;
        if maps.get(*last_hit).is_some_and(covers) {
            return *last_hit as u64 + 1;
        }
        match maps.iter().position(covers) {
            Some(i) => {
                *last_hit = i;
                i as u64 + 1
            }
            None => 0,
        }
    }
}

/// A `ValueType` message (two string indexes) as field `field`.
fn value_type(w: &mut ProtoWriter<'_>, field: u32, (ty, unit): (i64, i64)) -> Result<(), OsError> {
    let open = w.begin(field)?;
    w.int64(field::VALUE_TYPE_TYPE, ty)?;
    w.int64(field::VALUE_TYPE_UNIT, unit)?;
    w.end(open)
}

// ---- dedup tables ---------------------------------------------------------------------------

/// An open-addressing hash index from keys to entry numbers of a table kept elsewhere,
/// which supplies hashing and equality: slot value `n + 1` names entry `n`, 0 is empty.
/// Linear probing, at most half full, so probes stay short and a free slot always exists.
#[derive(Debug)]
struct Index {
    slots: OsVec<u32>,
}

impl Index {
    const fn new() -> Self {
        Self {
            slots: OsVec::new(),
        }
    }

    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    /// The entry whose key hashes to `hash` and satisfies `is_key`, if any.
    fn find(&self, hash: u64, is_key: impl Fn(usize) -> bool) -> Option<usize> {
        let slots = self.slots.as_slice();
        if slots.is_empty() {
            return None;
        }
        let mut i = hash as usize & self.mask();
        loop {
            match slots[i] {
                0 => return None,
                n if is_key(n as usize - 1) => return Some(n as usize - 1),
                _ => i = (i + 1) & self.mask(),
            }
        }
    }

    /// Makes room to insert entry number `entries` (the table's current length), rehashing
    /// the existing ones with `hash_of` when the index would pass half full.
    fn make_room(&mut self, entries: usize, hash_of: impl Fn(usize) -> u64) -> Result<(), OsError> {
        if entries >= u32::MAX as usize - 1 {
            return Err(OsError(ENOMEM));
        }
        if (entries + 1) * 2 <= self.slots.len() {
            return Ok(());
        }
        let size = (self.slots.len() * 2).max(1024);
        let mut grown = Index {
            slots: OsVec::filled(0, size)?,
        };
        for n in 0..entries {
            grown.insert(hash_of(n), n);
        }
        *self = grown;
        Ok(())
    }

    /// Records entry `n` under `hash`; `make_room` must have been called for it.
    fn insert(&mut self, hash: u64, n: usize) {
        let mask = self.mask();
        let slots = self.slots.as_mut_slice();
        debug_assert!(!slots.is_empty());
        let mut i = hash as usize & mask;
        // `make_room` keeps a free slot, so this ends.
        while let Some(&taken) = slots.get(i) {
            if taken == 0 {
                slots[i] = n as u32 + 1;
                return;
            }
            i = (i + 1) & mask;
        }
    }
}

/// FNV-1a over a byte string, then mixed.
fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix64(h)
}

/// The profile's string table: each distinct string once, "" at index 0.
#[derive(Debug)]
struct StringTable {
    bytes: OsBuf,
    /// (offset, length) in `bytes` of each string.
    spans: OsVec<(usize, usize)>,
    index: Index,
}

impl StringTable {
    fn new() -> Result<Self, OsError> {
        let mut t = Self {
            bytes: OsBuf::new(),
            spans: OsVec::new(),
            index: Index::new(),
        };
        t.intern(b"")?;
        Ok(t)
    }

    fn get(&self, n: usize) -> &[u8] {
        match self.spans.get(n) {
            Some((at, len)) => self.bytes.as_slice().get(at..at + len).unwrap_or(&[]),
            None => &[],
        }
    }

    /// The index of `s`, added if new.
    fn intern(&mut self, s: &[u8]) -> Result<i64, OsError> {
        let hash = hash_bytes(s);
        if let Some(n) = self.index.find(hash, |n| self.get(n) == s) {
            return Ok(n as i64);
        }
        let n = self.spans.len();
        let (bytes, spans) = (&self.bytes, &self.spans);
        self.index.make_room(n, |i| {
            let (at, len) = spans.get(i).unwrap_or((0, 0));
            hash_bytes(bytes.as_slice().get(at..at + len).unwrap_or(&[]))
        })?;
        self.spans.reserve(1)?;
        let at = self.bytes.len();
        self.bytes.extend(s)?;
        self.spans.push((at, s.len()))?;
        self.index.insert(hash, n);
        Ok(n as i64)
    }

    fn iter(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.spans.len()).map(|n| self.get(n))
    }
}

/// The profile's locations: one per distinct address, id = position + 1.
#[derive(Debug)]
struct Locations {
    addresses: OsVec<u64>,
    index: Index,
}

impl Locations {
    const fn new() -> Self {
        Self {
            addresses: OsVec::new(),
            index: Index::new(),
        }
    }

    /// The id of the location at `address`, added if new.
    fn id_of(&mut self, address: u64) -> Result<u64, OsError> {
        let hash = mix64(address);
        let addresses = &self.addresses;
        if let Some(n) = self.index.find(hash, |n| addresses.get(n) == Some(address)) {
            return Ok(n as u64 + 1);
        }
        let n = addresses.len();
        self.index
            .make_room(n, |i| mix64(addresses.get(i).unwrap_or(0)))?;
        self.addresses.push(address)?;
        self.index.insert(hash, n);
        Ok(n as u64 + 1)
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod no_global_allocation;
