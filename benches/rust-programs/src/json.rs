//! serde_json: 48 MiB of JSON text (an array of nested records: objects, arrays,
//! strings with escapes, integers, floats, booleans, nulls), parsed into `serde_json::Value`
//! three times (each tree dropped before the next parse: a program reloading its input),
//! the last tree serialised back to a `String`, and the text parsed once more into typed
//! structs through `#[derive(Deserialize)]`.

use crate::rng::Rng;
use serde::Deserialize;
use serde_json::Value;
use std::fmt::Write as _;

/// Size of the generated text: issue #13 asked for about 100 MB, which takes 4 to 7 s here
/// with the system allocator; 48 MiB keeps the workload within a few seconds.
const TEXT_BYTES: usize = 48 << 20;

#[derive(Debug, Deserialize)]
struct Document {
    source: String,
    records: Vec<Record>,
}

#[derive(Debug, Deserialize)]
struct Record {
    id: u64,
    name: String,
    email: String,
    active: bool,
    score: f64,
    tags: Vec<String>,
    address: Address,
    orders: Vec<Order>,
    parent: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct Address {
    street: String,
    city: String,
    zip: String,
}

#[derive(Debug, Deserialize)]
struct Order {
    sku: String,
    quantity: u32,
    price: f64,
    note: String,
}

/// The JSON text: `{"source": ..., "records": [...]}` of at least `bytes` bytes.
fn generate(bytes: usize) -> String {
    let mut rng = Rng::new(0x6a73_6f6e);
    let mut text = String::with_capacity(bytes + 4096);
    text.push_str("{\"source\":\"tessera-bench rust-programs\",\"records\":[");
    let mut id = 0u64;
    while text.len() < bytes {
        if id > 0 {
            text.push(',');
        }
        let (first, last) = (rng.word(), rng.word());
        let _ = write!(
            text,
            "{{\"id\":{id},\"name\":\"{first} {last}\",\"email\":\"{first}.{last}{}@example.org\",\
             \"active\":{},\"score\":{}.{:03},\"tags\":[",
            rng.below(1000),
            rng.below(2) == 0,
            rng.below(10_000),
            rng.below(1000),
        );
        for t in 0..rng.below(6) {
            if t > 0 {
                text.push(',');
            }
            let _ = write!(text, "\"{}-{}\"", rng.word(), rng.below(100));
        }
        let _ = write!(
            text,
            "],\"address\":{{\"street\":\"{} {} Street\",\"city\":\"{}ville\",\"zip\":\"{:05}\"}},\"orders\":[",
            rng.below(9999) + 1,
            rng.word(),
            rng.word(),
            rng.below(100_000),
        );
        for o in 0..rng.below(8) {
            if o > 0 {
                text.push(',');
            }
            // Every fourth note has escapes, which serde_json must unescape into a new
            // string rather than borrow.
            let note = match rng.below(4) {
                0 => format!("\\\"{}\\\" \\u00e9t\\u00e9\\n{}", rng.word(), rng.word()),
                _ => format!("{} {} {}", rng.word(), rng.word(), rng.word()),
            };
            let _ = write!(
                text,
                "{{\"sku\":\"SKU-{:08X}\",\"quantity\":{},\"price\":{}.{:02},\"note\":\"{note}\"}}",
                rng.below(1 << 32),
                rng.below(20) + 1,
                rng.below(500),
                rng.below(100),
            );
        }
        text.push_str("],\"parent\":");
        match id.checked_sub(rng.below(50) + 1) {
            Some(parent) if rng.below(3) == 0 => {
                let _ = write!(text, "{parent}");
            }
            _ => text.push_str("null"),
        }
        text.push('}');
        id += 1;
    }
    text.push_str("]}");
    text
}

/// The number of nodes of a tree.
fn nodes(value: &Value) -> u64 {
    1 + match value {
        Value::Array(items) => items.iter().map(nodes).sum(),
        Value::Object(fields) => fields.values().map(nodes).sum(),
        _ => 0,
    }
}

pub(crate) fn run() -> String {
    let text = generate(TEXT_BYTES);
    let mut tree_nodes = Vec::new();
    let mut last: Option<Value> = None;
    for _ in 0..3 {
        // The previous tree goes before the next parse: one tree at a time is alive.
        drop(last.take());
        let tree: Value = serde_json::from_str(&text).expect("the generated text is valid JSON");
        tree_nodes.push(nodes(&tree));
        last = Some(tree);
    }
    let back = serde_json::to_string(&last).expect("a Value always serialises");
    drop(last);
    let back_len = back.len();
    drop(back);
    let doc: Document = serde_json::from_str(&text).expect("the text matches the structs");
    let (mut orders, mut quantity, mut cents, mut tags, mut parents, mut active) =
        (0usize, 0u64, 0u64, 0usize, 0usize, 0usize);
    let mut name_bytes = doc.source.len();
    for r in &doc.records {
        orders += r.orders.len();
        quantity += r.orders.iter().map(|o| u64::from(o.quantity)).sum::<u64>();
        cents += r
            .orders
            .iter()
            .map(|o| (o.price * 100.0).round() as u64)
            .sum::<u64>();
        tags += r.tags.len();
        parents += usize::from(r.parent.is_some_and(|p| p < r.id));
        active += usize::from(r.active);
        name_bytes += r.name.len() + r.email.len() + r.address.street.len();
        name_bytes += r.address.city.len() + r.address.zip.len();
        name_bytes += r
            .orders
            .iter()
            .map(|o| o.sku.len() + o.note.len())
            .sum::<usize>();
        name_bytes += (r.score >= 0.0) as usize;
    }
    format!(
        "serde_json text={} nodes={tree_nodes:?} reserialised={back_len} records={} orders={orders} \
         quantity={quantity} cents={cents} tags={tags} parents={parents} active={active} string_bytes={name_bytes}",
        text.len(),
        doc.records.len(),
    )
}
