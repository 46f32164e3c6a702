//! `cfi.rs`'s tests: hand-made CIEs and FDEs, LEB128.

use super::*;

/// A CIE with the given augmentation string (and, with 'z', data: the FDE encoding
/// `udata4`, absolute), code alignment 1, data alignment -8, and the initial
/// instructions of every x86-64 CIE: CFA = rsp + 8, return address at CFA - 8.
fn cie(augmentation: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 0, 0, 1];
    b.extend_from_slice(augmentation);
    b.extend_from_slice(&[0, 1, 0x78, 16]);
    if augmentation.first() == Some(&b'z') {
        b.extend_from_slice(&[1, 0x03]);
    }
    b.extend_from_slice(&[0x0c, 7, 8, 0x90, 1]);
    b
}

/// An FDE for `[0x1000, 0x1100)` with `code`.
fn fde(code: &[u8]) -> Vec<u8> {
    let mut b = vec![0x10, 0, 0, 0]; // the CIE pointer: not followed by `evaluate`
    b.extend_from_slice(&0x1000u32.to_le_bytes());
    b.extend_from_slice(&0x100u32.to_le_bytes());
    b.push(0); // no augmentation data
    b.extend_from_slice(code);
    b
}

/// A function with a frame pointer, an epilogue in the middle, a CFA expression and
/// an outermost part.
const CODE: &[u8] = &[
    0x41, // 0x1001: push %rbp
    0x0e, 0x10, // CFA = rsp + 16
    0x86, 0x02, // rbp at CFA - 16
    0x43, // 0x1004: mov %rsp, %rbp
    0x0d, 0x06, // CFA = rbp + 16
    0x02, 0x4c, // 0x1050: an early return
    0x0a, // remember_state
    0x0c, 0x07, 0x08, // CFA = rsp + 8
    0xc6, // restore rbp
    0x41, // 0x1051: the code after it
    0x0b, // restore_state
    0x41, // 0x1052
    0x0f, 0x02, 0x76, 0x00, // CFA = an expression
    0x0e, 0x20, // an offset: still an expression
    0x4e, // 0x1060
    0x0c, 0x07, 0x10, // CFA = rsp + 16
    0x07, 0x10, // the return address is undefined
];

fn rule_at(cie: &[u8], fde: &[u8], pc: u64) -> Option<Rule> {
    let bases = Bases {
        text: 0,
        data: 0,
        func: 0x1000,
    };
    let entry = |bytes| Entry {
        bytes,
        addr: 0x8000,
    };
    evaluate(entry(cie), entry(fde), &bases, pc + 1)
}

fn step(base: CfaBase, cfa_offset: u32, rbp_offset: Option<i16>) -> Option<Rule> {
    Some(Rule::Step(Step {
        base,
        cfa_offset,
        ra_offset: -8,
        rbp_offset,
    }))
}

#[test]
fn rows_follow_the_instructions_up_to_the_pc() {
    let (cie, fde) = (cie(b"zR"), fde(CODE));
    let at = |pc| rule_at(&cie, &fde, pc);
    assert_eq!(at(0x1000), step(CfaBase::Rsp, 8, None));
    assert_eq!(at(0x1001), step(CfaBase::Rsp, 16, Some(-16)));
    assert_eq!(at(0x1003), step(CfaBase::Rsp, 16, Some(-16)));
    assert_eq!(at(0x1004), step(CfaBase::Rbp, 16, Some(-16)));
    assert_eq!(at(0x104f), step(CfaBase::Rbp, 16, Some(-16)));
    assert_eq!(at(0x1050), step(CfaBase::Rsp, 8, None));
    assert_eq!(at(0x1051), step(CfaBase::Rbp, 16, Some(-16)));
    assert_eq!(at(0x1052), None);
    assert_eq!(at(0x105f), None);
    assert_eq!(at(0x1060), Some(Rule::End));
    assert_eq!(at(0x10ff), Some(Rule::End));
    // Outside the FDE's range.
    assert_eq!(at(0x1100), None);
    assert_eq!(at(0xfff), None);
}

#[test]
fn a_cie_without_augmentation_data_is_read() {
    // No 'z': no augmentation data in the CIE or the FDE; pointers are absolute
    // 8-byte words.
    let cie = cie(b"");
    let mut fde = vec![0x10, 0, 0, 0];
    fde.extend_from_slice(&0x1000u64.to_le_bytes());
    fde.extend_from_slice(&0x100u64.to_le_bytes());
    fde.extend_from_slice(&[0x41, 0x0e, 0x10]);
    assert_eq!(rule_at(&cie, &fde, 0x1000), step(CfaBase::Rsp, 8, None));
    assert_eq!(rule_at(&cie, &fde, 0x1001), step(CfaBase::Rsp, 16, None));
}

#[test]
fn what_the_walk_cannot_follow_is_refused() {
    // A signal frame.
    assert_eq!(rule_at(&cie(b"zRS"), &fde(&[]), 0x1000), None);
    // An unknown augmentation.
    assert_eq!(rule_at(&cie(b"eh"), &fde(&[]), 0x1000), None);
    // A CFA on rbx.
    assert_eq!(rule_at(&cie(b"zR"), &fde(&[0x0d, 3]), 0x1000), None);
    // rbp kept in another register, the return address in an expression.
    assert_eq!(rule_at(&cie(b"zR"), &fde(&[0x09, 6, 3]), 0x1000), None);
    assert_eq!(rule_at(&cie(b"zR"), &fde(&[0x10, 16, 1, 0]), 0x1000), None);
    // A rule for rsp.
    assert_eq!(rule_at(&cie(b"zR"), &fde(&[0x14, 7, 1]), 0x1000), None);
    // Truncated instructions, an unknown opcode, restore_state with nothing saved.
    assert_eq!(rule_at(&cie(b"zR"), &fde(&[0x0c, 7]), 0x1000), None);
    assert_eq!(rule_at(&cie(b"zR"), &fde(&[0x3f]), 0x1000), None);
    assert_eq!(rule_at(&cie(b"zR"), &fde(&[0x0b]), 0x1000), None);
    // Rules for other registers are dropped.
    let others = [0x83, 1, 0x09, 3, 4, 0x10, 12, 1, 0, 0x2e, 8];
    assert_eq!(
        rule_at(&cie(b"zR"), &fde(&others), 0x1000),
        step(CfaBase::Rsp, 8, None)
    );
}

#[test]
fn leb128_numbers_are_read() {
    let read = |bytes: &[u8]| {
        let mut r = Reader { bytes, addr: 0 };
        (r.uleb(), Reader { bytes, addr: 0 }.sleb())
    };
    assert_eq!(read(&[0x02]), (Some(2), Some(2)));
    assert_eq!(read(&[0x7f]), (Some(127), Some(-1)));
    assert_eq!(read(&[0x80, 0x01]), (Some(128), Some(128)));
    assert_eq!(read(&[0x80, 0x7f]), (Some(16256), Some(-128)));
    assert_eq!(read(&[0x80]), (None, None));
    let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
    assert_eq!(read(&max).0, Some(u64::MAX));
    let over = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x03];
    assert_eq!(read(&over).0, None);
}
