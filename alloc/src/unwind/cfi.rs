//! Call-frame information: from the FDE that covers a return address to the one rule the
//! fast walk (`fast.rs`) needs for that frame — where the caller's CFA, return address and
//! `rbp` are.
//!
//! The format is DWARF's (DWARF 5, §6.4 "Call Frame Information") as `.eh_frame` carries it
//! (the LSB's "Exception Frames" chapter: a CIE id of 0, a CIE pointer relative to the
//! FDE, the augmentation string and the `DW_EH_PE_*` pointer encodings), for x86-64 (psABI
//! §3.6.2 and §3.7: register numbers, the CFA is the stack pointer before the `call`, the
//! return address is column 16).
//!
//! Only rules the walk can follow with three registers (rsp, rbp and the return address)
//! come out as [`Rule::Step`]: the CFA is rsp or rbp plus an offset, the return address is
//! at a CFA offset, rbp is at a CFA offset or unchanged. Rules for the other registers are
//! read and dropped: no CFA here depends on them. Everything else — a CFA expression (PLT
//! entries, realigned stacks), a signal frame, a register rule on rsp, rbp or the return
//! address that is not an offset, an encoding not met in practice — is
//! [`Rule::Unsupported`], and the caller falls back to libgcc's walk, which knows them.

/// DWARF register numbers of x86-64 (psABI, figure 3.36).
const RBP: u64 = 6;
const RSP: u64 = 7;
const RETURN_ADDRESS: u64 = 16;
/// The same, as [`Cfa`] keeps them.
const CFA_RBP: u16 = RBP as u16;
const CFA_RSP: u16 = RSP as u16;

/// The register the CFA is computed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CfaBase {
    Rsp,
    Rbp,
}

/// How to get from a frame to its caller's (the registers after a return).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Step {
    /// The CFA is `base + cfa_offset`; it becomes the caller's rsp.
    pub(super) base: CfaBase,
    pub(super) cfa_offset: u32,
    /// The return address is read at `CFA + ra_offset` (-8 in every x86-64 frame).
    pub(super) ra_offset: i16,
    /// The caller's rbp is read at `CFA + offset`, or is this frame's when `None`.
    pub(super) rbp_offset: Option<i16>,
}

/// The unwind rule of one return address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Rule {
    Step(Step),
    /// The outermost frame: its return address is undefined (`_start`, `clone`), or no FDE
    /// covers it. libgcc reports this frame, then stops; so does the fast walk.
    End,
    /// A frame only libgcc's walk follows.
    Unsupported,
}

/// The largest CFA offset a [`Step`] holds (the cache packs it into 28 bits); a bigger
/// frame goes to libgcc.
pub(super) const MAX_CFA_OFFSET: u32 = (1 << 28) - 1;

/// The bases of the `DW_EH_PE_textrel`/`datarel` encodings and the start of the function,
/// as `_Unwind_Find_FDE` finds them (`tessera_sys::dl::Fde`).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Bases {
    pub(super) text: usize,
    pub(super) data: usize,
    pub(super) func: usize,
}

/// One CIE or FDE: the bytes after its length field, and their address (pc-relative
/// pointers are relative to where they are stored).
#[derive(Clone, Copy, Debug)]
pub(super) struct Entry<'a> {
    pub(super) bytes: &'a [u8],
    pub(super) addr: usize,
}

/// Reads the CIE or FDE at `at`.
///
/// # Safety
/// `at` must point at the length field of a CIE or FDE of a loaded module's `.eh_frame`
/// (which stays mapped while the walk runs: see `fast.rs` on unloading).
pub(super) unsafe fn entry_at(at: usize) -> Option<Entry<'static>> {
    // SAFETY: the caller's contract: a length field is there, 4-byte aligned or not.
    let len32 = unsafe { (at as *const u32).read_unaligned() };
    let (len, start) = match len32 {
        0 => return None,
        // The 64-bit format: the length follows.
        // SAFETY: as above, the extended length follows the escape.
        0xffff_ffff => (
            unsafe { ((at + 4) as *const u64).read_unaligned() },
            at + 12,
        ),
        n => (u64::from(n), at + 4),
    };
    let len = usize::try_from(len).ok()?;
    // SAFETY: the entry's length covers its bytes, in the mapped `.eh_frame`.
    let bytes = unsafe { core::slice::from_raw_parts(start as *const u8, len) };
    Some(Entry { bytes, addr: start })
}

/// The rule for the return address `ra` of the FDE at `fde`.
///
/// # Safety
/// `fde` must be the FDE `_Unwind_Find_FDE` returned for `ra - 1`, with its `bases`.
pub(super) unsafe fn rule_for(fde: usize, bases: &Bases, ra: usize) -> Rule {
    // SAFETY: the caller's contract.
    let Some(fde) = (unsafe { entry_at(fde) }) else {
        return Rule::Unsupported;
    };
    let Some(id) = Reader::new(fde).u32() else {
        return Rule::Unsupported;
    };
    // In `.eh_frame` the CIE pointer is the distance back from the field itself.
    let cie_at = fde.addr.wrapping_sub(id as usize);
    if id == 0 || cie_at >= fde.addr {
        return Rule::Unsupported;
    }
    // SAFETY: a well-formed FDE's CIE pointer leads to its CIE, in the same section
    // (and `_Unwind_Find_FDE` only returns FDEs it has parsed with their CIEs).
    let Some(cie) = (unsafe { entry_at(cie_at) }) else {
        return Rule::Unsupported;
    };
    evaluate(cie, fde, bases, ra as u64).unwrap_or(Rule::Unsupported)
}

/// The rule in force at `ra - 1` in the frame `fde` describes; `None` for anything this
/// file does not follow.
pub(super) fn evaluate(cie: Entry<'_>, fde: Entry<'_>, bases: &Bases, ra: u64) -> Option<Rule> {
    let cie = Cie::parse(cie, bases)?;
    let mut r = Reader::new(fde);
    r.u32()?; // the CIE pointer
    let start = r.pointer(cie.fde_encoding, bases)?;
    let range = r.pointer(cie.fde_encoding & 0x0f, bases)?;
    if start != bases.func as u64 || !(start < ra && ra <= start.wrapping_add(range)) {
        return None;
    }
    if cie.has_augmentation_data {
        let len = usize::try_from(r.uleb()?).ok()?;
        r.skip(len)?;
    }
    let mut machine = Machine::new(&cie, bases, ra);
    // The CIE's initial instructions run from location 0, as libgcc runs them (they hold
    // no advance in practice); the FDE's from the function's start.
    machine.run(cie.instructions)?;
    machine.initial = machine.row;
    machine.loc = start;
    machine.run(r)?;
    machine.row.rule()
}

/// The parts of a CIE the walk uses.
#[derive(Debug)]
struct Cie<'a> {
    code_align: u64,
    data_align: i64,
    fde_encoding: u8,
    has_augmentation_data: bool,
    instructions: Reader<'a>,
}

impl<'a> Cie<'a> {
    fn parse(entry: Entry<'a>, bases: &Bases) -> Option<Cie<'a>> {
        let mut r = Reader::new(entry);
        if r.u32()? != 0 {
            return None; // not a CIE
        }
        let version = r.u8()?;
        if !matches!(version, 1 | 3 | 4) {
            return None;
        }
        let augmentation = r.cstr()?;
        if version == 4 {
            let (address_size, segment_size) = (r.u8()?, r.u8()?);
            if address_size != 8 || segment_size != 0 {
                return None;
            }
        }
        let code_align = r.uleb()?;
        let data_align = r.sleb()?;
        let ra_column = if version == 1 {
            u64::from(r.u8()?)
        } else {
            r.uleb()?
        };
        if ra_column != RETURN_ADDRESS {
            return None;
        }
        let mut cie = Cie {
            code_align,
            data_align,
            fde_encoding: 0, // DW_EH_PE_absptr when there is no 'R'
            has_augmentation_data: false,
            instructions: r,
        };
        let Some((&b'z', letters)) = augmentation.split_first() else {
            // An empty string is the plain format; the old "eh" and others are not met.
            return augmentation.is_empty().then_some(cie);
        };
        cie.has_augmentation_data = true;
        let len = usize::try_from(r.uleb()?).ok()?;
        let mut data = r.take(len)?;
        for &letter in letters {
            match letter {
                b'R' => cie.fde_encoding = data.u8()?,
                // The LSDA encoding: FDEs carry the pointer in their augmentation data,
                // which is skipped whole.
                b'L' => {
                    data.u8()?;
                }
                b'P' => {
                    let encoding = data.u8()?;
                    // Read, not followed: an indirect personality's cell is not needed.
                    data.pointer(encoding & 0x7f, bases)?;
                }
                // 'S' (a signal frame: the caller is unwound from the pc itself, not pc - 1)
                // and the letters of other architectures or future ones.
                _ => return None,
            }
        }
        cie.instructions = r;
        Some(cie)
    }
}

/// A register rule (DWARF 5 §6.4.1), for the three registers the walk follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RegRule {
    /// No instruction named it: callee-saved registers keep their value (libgcc's
    /// default), the stack pointer becomes the CFA.
    Unspecified,
    Undefined,
    SameValue,
    /// Saved at `CFA + n`.
    Offset(i32),
    /// `register`, `expression`, `val_offset`, `val_expression`.
    Other,
}

/// The CFA rule: a register and an offset, or an expression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cfa {
    offset: i64,
    /// A DWARF register number; `u16::MAX` stands for any beyond (none the walk follows).
    register: u16,
    expression: bool,
}

impl Cfa {
    fn register(register: u64) -> u16 {
        u16::try_from(register).unwrap_or(u16::MAX)
    }
}

/// One row of the CFI table, reduced to what the walk follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Row {
    cfa: Cfa,
    rbp: RegRule,
    rsp: RegRule,
    ra: RegRule,
}

impl Row {
    const EMPTY: Row = Row {
        cfa: Cfa {
            register: CFA_RSP,
            offset: 0,
            expression: false,
        },
        rbp: RegRule::Unspecified,
        rsp: RegRule::Unspecified,
        ra: RegRule::Unspecified,
    };

    fn rule_mut(&mut self, register: u64) -> Option<&mut RegRule> {
        match register {
            RBP => Some(&mut self.rbp),
            RSP => Some(&mut self.rsp),
            RETURN_ADDRESS => Some(&mut self.ra),
            _ => None,
        }
    }

    /// Sets the rule "saved at `CFA + offset`" (one the walk cannot follow if the offset
    /// does not fit in 32 bits).
    fn set_offset(&mut self, register: u64, offset: i64) {
        let rule = i32::try_from(offset).map_or(RegRule::Other, RegRule::Offset);
        self.set(register, rule);
    }

    fn set(&mut self, register: u64, rule: RegRule) {
        if let Some(slot) = self.rule_mut(register) {
            *slot = rule;
        }
    }

    /// This row as the walk's rule; `None` if the walk cannot follow it.
    fn rule(&self) -> Option<Rule> {
        let base = match self.cfa {
            Cfa {
                expression: true, ..
            } => return None,
            Cfa {
                register: CFA_RSP, ..
            } => CfaBase::Rsp,
            Cfa {
                register: CFA_RBP, ..
            } => CfaBase::Rbp,
            _ => return None,
        };
        let cfa_offset = u32::try_from(self.cfa.offset)
            .ok()
            .filter(|&o| o <= MAX_CFA_OFFSET)?;
        if self.rsp != RegRule::Unspecified {
            return None;
        }
        let ra_offset = match self.ra {
            // The outermost frame (DWARF 5 §6.4.4): libgcc reports it and stops.
            RegRule::Undefined => return Some(Rule::End),
            // Below the CFA, as every call leaves it: a walk of a suspended coroutine reads
            // only its own stack, and its top is a CFA.
            RegRule::Offset(n) if n < 0 => i16::try_from(n).ok()?,
            _ => return None,
        };
        let rbp_offset = match self.rbp {
            // libgcc treats an undefined callee-saved register as unchanged.
            RegRule::Unspecified | RegRule::SameValue | RegRule::Undefined => None,
            RegRule::Offset(n) if n < 0 => Some(i16::try_from(n).ok()?),
            RegRule::Offset(_) | RegRule::Other => return None,
        };
        Some(Rule::Step(Step {
            base,
            cfa_offset,
            ra_offset,
            rbp_offset,
        }))
    }
}

/// Depth of the `remember_state` stack: compilers nest one or two (an epilogue in the
/// middle of a function); more goes to libgcc.
const STATE_DEPTH: usize = 4;

/// The CFA-instruction interpreter (DWARF 5 §6.4.2), run up to the row of `ra - 1`.
struct Machine<'a> {
    code_align: u64,
    data_align: i64,
    fde_encoding: u8,
    bases: &'a Bases,
    /// The location of the current row; instructions run while it is below `target`.
    loc: u64,
    target: u64,
    row: Row,
    /// The row after the CIE's initial instructions, for `restore`.
    initial: Row,
    saved: [Row; STATE_DEPTH],
    depth: usize,
}

impl<'a> Machine<'a> {
    fn new(cie: &Cie<'_>, bases: &'a Bases, ra: u64) -> Machine<'a> {
        Machine {
            code_align: cie.code_align,
            data_align: cie.data_align,
            fde_encoding: cie.fde_encoding,
            bases,
            loc: 0,
            target: ra,
            row: Row::EMPTY,
            initial: Row::EMPTY,
            saved: [Row::EMPTY; STATE_DEPTH],
            depth: 0,
        }
    }

    fn factored(&self, n: i64) -> Option<i64> {
        n.checked_mul(self.data_align)
    }

    fn advance(&mut self, delta: u64) -> Option<()> {
        self.loc = self.loc.checked_add(delta.checked_mul(self.code_align)?)?;
        Some(())
    }

    /// Runs `code` until its end or until the row reaches `target` (libgcc's
    /// `execute_cfa_program`: the row in force at `ra - 1` is the last one below `ra`).
    fn run(&mut self, mut code: Reader<'_>) -> Option<()> {
        while !code.is_empty() && self.loc < self.target {
            let op = code.u8()?;
            let low = op & 0x3f;
            match op >> 6 {
                // DW_CFA_advance_loc
                1 => self.advance(u64::from(low))?,
                // DW_CFA_offset
                2 => {
                    let offset = self.factored(i64::try_from(code.uleb()?).ok()?)?;
                    self.row.set_offset(u64::from(low), offset);
                }
                // DW_CFA_restore
                3 => self.restore(u64::from(low)),
                _ => self.extended(op, &mut code)?,
            }
        }
        Some(())
    }

    fn restore(&mut self, register: u64) {
        if let (Some(&mut initial), Some(slot)) =
            (self.initial.rule_mut(register), self.row.rule_mut(register))
        {
            *slot = initial;
        }
    }

    /// The instructions whose opcode is a whole byte.
    fn extended(&mut self, op: u8, code: &mut Reader<'_>) -> Option<()> {
        match op {
            // DW_CFA_nop
            0x00 => {}
            // DW_CFA_set_loc
            0x01 => self.loc = code.pointer(self.fde_encoding, self.bases)?,
            // DW_CFA_advance_loc1, 2, 4
            0x02 => self.advance(u64::from(code.u8()?))?,
            0x03 => self.advance(u64::from(code.u16()?))?,
            0x04 => self.advance(u64::from(code.u32()?))?,
            // DW_CFA_offset_extended
            0x05 => {
                let register = code.uleb()?;
                let offset = self.factored(i64::try_from(code.uleb()?).ok()?)?;
                self.row.set_offset(register, offset);
            }
            // DW_CFA_restore_extended
            0x06 => self.restore(code.uleb()?),
            // DW_CFA_undefined
            0x07 => self.row.set(code.uleb()?, RegRule::Undefined),
            // DW_CFA_same_value
            0x08 => self.row.set(code.uleb()?, RegRule::SameValue),
            // DW_CFA_register
            0x09 => {
                let register = code.uleb()?;
                code.uleb()?;
                self.row.set(register, RegRule::Other);
            }
            // DW_CFA_remember_state: the CFA rule is part of the state (libgcc keeps it
            // with the registers, and GCC's epilogues rely on it).
            0x0a => {
                *self.saved.get_mut(self.depth)? = self.row;
                self.depth += 1;
            }
            // DW_CFA_restore_state
            0x0b => {
                self.depth = self.depth.checked_sub(1)?;
                self.row = self.saved[self.depth];
            }
            // DW_CFA_def_cfa
            0x0c => {
                let register = Cfa::register(code.uleb()?);
                let offset = i64::try_from(code.uleb()?).ok()?;
                self.row.cfa = Cfa {
                    register,
                    offset,
                    expression: false,
                };
            }
            // DW_CFA_def_cfa_register: the offset stays.
            0x0d => {
                self.row.cfa.register = Cfa::register(code.uleb()?);
                self.row.cfa.expression = false;
            }
            // DW_CFA_def_cfa_offset: the register stays (an expression stays one, as in
            // libgcc).
            0x0e => self.row.cfa.offset = i64::try_from(code.uleb()?).ok()?,
            // DW_CFA_def_cfa_expression
            0x0f => {
                code.block()?;
                self.row.cfa.expression = true;
            }
            // DW_CFA_expression
            0x10 => {
                let register = code.uleb()?;
                code.block()?;
                self.row.set(register, RegRule::Other);
            }
            // DW_CFA_offset_extended_sf
            0x11 => {
                let register = code.uleb()?;
                let offset = self.factored(code.sleb()?)?;
                self.row.set_offset(register, offset);
            }
            // DW_CFA_def_cfa_sf
            0x12 => {
                let register = Cfa::register(code.uleb()?);
                let offset = self.factored(code.sleb()?)?;
                self.row.cfa = Cfa {
                    register,
                    offset,
                    expression: false,
                };
            }
            // DW_CFA_def_cfa_offset_sf
            0x13 => self.row.cfa.offset = self.factored(code.sleb()?)?,
            // DW_CFA_val_offset, DW_CFA_val_offset_sf
            0x14 | 0x15 => {
                let register = code.uleb()?;
                if op == 0x14 {
                    code.uleb()?;
                } else {
                    code.sleb()?;
                }
                self.row.set(register, RegRule::Other);
            }
            // DW_CFA_val_expression
            0x16 => {
                let register = code.uleb()?;
                code.block()?;
                self.row.set(register, RegRule::Other);
            }
            // DW_CFA_GNU_args_size: only landing pads use it.
            0x2e => {
                code.uleb()?;
            }
            // DW_CFA_GNU_negative_offset_extended
            0x2f => {
                let register = code.uleb()?;
                let offset = self.factored(i64::try_from(code.uleb()?).ok()?)?;
                self.row.set_offset(register, offset.checked_neg()?);
            }
            // DW_CFA_GNU_window_save (SPARC, AArch64's pointer authentication) and
            // anything unknown.
            _ => return None,
        }
        Some(())
    }
}

/// A bounds-checked cursor over an entry's bytes.
#[derive(Clone, Copy, Debug)]
struct Reader<'a> {
    bytes: &'a [u8],
    /// The address of `bytes[0]`.
    addr: usize,
}

impl<'a> Reader<'a> {
    fn new(entry: Entry<'a>) -> Reader<'a> {
        Reader {
            bytes: entry.bytes,
            addr: entry.addr,
        }
    }

    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The next `n` bytes as a reader of their own.
    fn take(&mut self, n: usize) -> Option<Reader<'a>> {
        if n > self.bytes.len() {
            return None;
        }
        let (head, tail) = self.bytes.split_at(n);
        let taken = Reader {
            bytes: head,
            addr: self.addr,
        };
        self.bytes = tail;
        self.addr += n;
        Some(taken)
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(drop)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.bytes.try_into().ok()
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.array()?))
    }

    /// A NUL-terminated string, without the NUL.
    fn cstr(&mut self) -> Option<&'a [u8]> {
        let len = self.bytes.iter().position(|&b| b == 0)?;
        let s = self.take(len)?.bytes;
        self.skip(1)?;
        Some(s)
    }

    /// An unsigned LEB128 number (DWARF 5 §7.6); more than 64 bits is malformed.
    // Not inlined: its loop, unrolled at each of the interpreter's ~20 call sites, made
    // `Machine::run` 15.7 KiB of the library's hot text (of which ~1.6 KiB runs), for a
    // call saved per number on a rule-cache miss (alloc/preload/hot-text.ld).
    #[inline(never)]
    fn uleb(&mut self) -> Option<u64> {
        let mut value = 0u64;
        let mut shift = 0;
        loop {
            let byte = self.u8()?;
            if shift >= 64 || (shift == 63 && byte & 0x7e != 0) {
                return None;
            }
            value |= u64::from(byte & 0x7f) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
    }

    /// A signed LEB128 number.
    // Not inlined, as `uleb`.
    #[inline(never)]
    fn sleb(&mut self) -> Option<i64> {
        let mut value = 0i64;
        let mut shift = 0;
        loop {
            let byte = self.u8()?;
            if shift >= 64 {
                return None;
            }
            value |= i64::from(byte & 0x7f) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                if shift < 64 && byte & 0x40 != 0 {
                    value |= -1i64 << shift;
                }
                return Some(value);
            }
        }
    }

    /// A ULEB128 length and that many bytes (a DWARF expression, skipped).
    fn block(&mut self) -> Option<()> {
        let len = usize::try_from(self.uleb()?).ok()?;
        self.skip(len)
    }

    /// A pointer in the `DW_EH_PE_*` encoding `encoding` (LSB, "DWARF Exception Header
    /// Encoding"): a format in the low nibble, what it is relative to in bits 4–6.
    /// Indirect pointers (bit 7) and the aligned format are not met in the fields read.
    fn pointer(&mut self, encoding: u8, bases: &Bases) -> Option<u64> {
        let at = self.addr as u64;
        let value = match encoding & 0x0f {
            0x00 => self.u64()?,                          // absptr
            0x01 => self.uleb()?,                         // uleb128
            0x02 => u64::from(self.u16()?),               // udata2
            0x03 => u64::from(self.u32()?),               // udata4
            0x04 => self.u64()?,                          // udata8
            0x09 => self.sleb()? as u64,                  // sleb128
            0x0a => i64::from(self.u16()? as i16) as u64, // sdata2
            0x0b => i64::from(self.u32()? as i32) as u64, // sdata4
            0x0c => self.u64()?,                          // sdata8
            _ => return None,
        };
        let base = match encoding & 0xf0 {
            0x00 => 0,                 // absolute
            0x10 => at,                // pcrel
            0x20 => bases.text as u64, // textrel
            0x30 => bases.data as u64, // datarel
            0x40 => bases.func as u64, // funcrel
            _ => return None,          // aligned, indirect
        };
        Some(base.wrapping_add(value))
    }
}

#[cfg(test)]
mod tests;
