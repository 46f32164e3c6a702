//! syn: a generated Rust source file of about 3 MiB (modules of structs with derives and
//! generics, enums, traits, impl blocks whose methods hold `let`s, `match`es, closures,
//! loops and macro calls) parsed with `syn::parse_file` five times, as a proc-macro or a
//! code-analysis tool parses a big crate: many small boxed nodes, tokens and strings.

use crate::rng::Rng;
use std::fmt::Write as _;
use syn::{ImplItem, Item};

/// Issue #13 asked for about 5 MB; five parses of that take over 5 s here with the system
/// allocator.
const SOURCE_BYTES: usize = 3 << 20;
const PARSES: usize = 5;

fn generate(bytes: usize) -> String {
    let mut rng = Rng::new(0x0073_796e);
    let mut src = String::with_capacity(bytes + 8192);
    src.push_str("//! Generated for tessera-bench.\n#![allow(dead_code)]\n\nuse std::collections::HashMap;\n\n");
    let mut n = 0u64;
    while src.len() < bytes {
        let (a, b) = (rng.word(), rng.word());
        let _ = write!(
            src,
            r#"pub mod m{n} {{
    use super::*;

    /// A {a} with a {b}.
    #[derive(Debug, Clone, PartialEq)]
    pub struct {ty}<T: Clone + std::fmt::Debug> {{
        pub id: u64,
        pub name: String,
        pub values: Vec<T>,
        lookup: HashMap<String, (usize, Option<T>)>,
    }}

    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum {ty}Kind {{
        {v1},
        {v2}(u32),
        {v3} {{ x: i64, y: i64 }},
    }}

    pub trait {ty}Ops {{
        fn score(&self, weight: f64) -> f64;
        fn describe(&self) -> String {{
            format!("{{}}-{{}}", "{a}", {k})
        }}
    }}

    impl<T: Clone + std::fmt::Debug> {ty}<T> {{
        pub fn new(id: u64, name: &str) -> Self {{
            Self {{ id, name: name.to_string(), values: Vec::new(), lookup: HashMap::new() }}
        }}

        pub fn push(&mut self, value: T) -> usize {{
            let key = format!("{b}-{{}}", self.values.len());
            self.lookup.insert(key, (self.values.len(), Some(value.clone())));
            self.values.push(value);
            self.values.len()
        }}

        pub fn classify(&self, kind: {ty}Kind) -> i64 {{
            let base = self.id as i64 * {k} - {j};
            match kind {{
                {ty}Kind::{v1} => base,
                {ty}Kind::{v2}(n) if n > {j} => base + n as i64,
                {ty}Kind::{v2}(n) => base - n as i64,
                {ty}Kind::{v3} {{ x, y }} => {{
                    let mut acc = base;
                    for i in 0..(x.abs() % 16) {{
                        acc = acc.wrapping_mul(31).wrapping_add(i ^ y);
                        if acc % {k} == 0 {{
                            break;
                        }}
                    }}
                    acc
                }}
            }}
        }}

        pub fn names(&self) -> Vec<String> {{
            self.lookup
                .iter()
                .filter(|(k, (i, v))| !k.is_empty() && *i < {j} && v.is_some())
                .map(|(k, _)| k.to_uppercase())
                .collect()
        }}
    }}

    impl {ty}Ops for {ty}<u32> {{
        fn score(&self, weight: f64) -> f64 {{
            let total: u32 = self.values.iter().copied().sum();
            (total as f64 * weight + {k}.0) / (1.0 + self.values.len() as f64)
        }}
    }}

    pub const {upper}_LIMIT: usize = {j};
    pub static {upper}_NAME: &str = "{a} {b} {n}";
}}

"#,
            ty = format!("{}{}{n}", capital(a), capital(b)),
            upper = format!("{}_{}", a.to_uppercase(), n),
            v1 = capital(rng.word()),
            v2 = format!("{}Two", capital(rng.word())),
            v3 = format!("{}Three", capital(rng.word())),
            k = rng.below(1000) + 1,
            j = rng.below(100),
        );
        n += 1;
    }
    src
}

fn capital(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

/// (items, functions with a body, statements in them) of a list of items, nested modules
/// included.
fn count(items: &[Item]) -> (usize, usize, usize) {
    let mut totals = (items.len(), 0, 0);
    for item in items {
        let inner = match item {
            Item::Mod(m) => m
                .content
                .as_ref()
                .map_or((0, 0, 0), |(_, items)| count(items)),
            Item::Fn(f) => (0, 1, f.block.stmts.len()),
            Item::Impl(i) => i.items.iter().fold((0, 0, 0), |acc, item| match item {
                ImplItem::Fn(f) => (acc.0, acc.1 + 1, acc.2 + f.block.stmts.len()),
                _ => acc,
            }),
            _ => (0, 0, 0),
        };
        totals = (totals.0 + inner.0, totals.1 + inner.1, totals.2 + inner.2);
    }
    totals
}

pub(crate) fn run() -> String {
    let src = generate(SOURCE_BYTES);
    let mut counts = Vec::with_capacity(PARSES);
    for _ in 0..PARSES {
        let file = syn::parse_file(&src).expect("the generated source parses");
        counts.push(count(&file.items));
    }
    let same = counts.windows(2).all(|w| w[0] == w[1]);
    let (items, fns, stmts) = counts[0];
    format!(
        "syn bytes={} parses={PARSES} same={same} items={items} fns={fns} stmts={stmts}",
        src.len()
    )
}
