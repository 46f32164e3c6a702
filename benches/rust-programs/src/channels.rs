//! tokio: 100,000 tasks on the multi-thread runtime, each sending 8 boxed messages (a
//! label and a payload of varying length) through bounded `tokio::sync::mpsc` channels to
//! 16 collector tasks; every producer's handle is kept and joined (the "spawn N, keep every
//! handle, then join all" shape), and the whole round is run four times on one runtime
//! (one round alone is over in a fraction of a second). Task, message and channel-block
//! allocations are often freed on another thread than the one that made them.

use tokio::sync::mpsc;

const TASKS: u64 = 100_000;
const ROUNDS: u64 = 4;
const MESSAGES: u64 = 8;
const COLLECTORS: usize = 16;
const CAPACITY: usize = 256;

/// One message; it travels boxed, as a trait-object or large message would.
#[derive(Debug)]
struct Message {
    task: u64,
    seq: u64,
    label: String,
    payload: Vec<u64>,
}

/// What one collector saw.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    messages: u64,
    sum: u64,
    label_bytes: u64,
}

pub(crate) fn run() -> String {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .build()
        .expect("a multi-thread runtime starts");
    let mut tallies = vec![Tally::default(); COLLECTORS];
    for _ in 0..ROUNDS {
        let round = runtime.block_on(one_round());
        for (total, t) in tallies.iter_mut().zip(round) {
            total.add(t);
        }
    }
    let mut total = Tally::default();
    for t in &tallies {
        total.add(*t);
    }
    format!(
        "tokio rounds={ROUNDS} tasks={TASKS} messages={} sum={} label_bytes={} per_collector={:?}",
        total.messages,
        total.sum,
        total.label_bytes,
        tallies.iter().map(|t| t.messages).collect::<Vec<_>>(),
    )
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.messages += other.messages;
        self.sum += other.sum;
        self.label_bytes += other.label_bytes;
    }
}

/// One round: the collectors, the producers, every handle joined; returns each collector's
/// tally.
async fn one_round() -> Vec<Tally> {
    let mut senders = Vec::with_capacity(COLLECTORS);
    let mut collectors = Vec::with_capacity(COLLECTORS);
    for _ in 0..COLLECTORS {
        let (tx, mut rx) = mpsc::channel::<Box<Message>>(CAPACITY);
        senders.push(tx);
        collectors.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            while let Some(m) = rx.recv().await {
                tally.messages += 1;
                tally.sum += m.task * MESSAGES + m.seq + m.payload.iter().sum::<u64>();
                tally.label_bytes += m.label.len() as u64;
            }
            tally
        }));
    }
    let producers: Vec<_> = (0..TASKS)
        .map(|task| {
            let tx = senders[task as usize % COLLECTORS].clone();
            tokio::spawn(async move {
                for seq in 0..MESSAGES {
                    let len = ((task * 7 + seq * 13) % 48) as usize;
                    let message = Box::new(Message {
                        task,
                        seq,
                        label: format!("task-{task}-message-{seq}"),
                        payload: (0..len as u64).collect(),
                    });
                    tx.send(message).await.expect("the collector outlives us");
                }
            })
        })
        .collect();
    for producer in producers {
        producer.await.expect("a producer does not panic");
    }
    drop(senders);
    let mut tallies = Vec::with_capacity(COLLECTORS);
    for collector in collectors {
        tallies.push(collector.await.expect("a collector does not panic"));
    }
    tallies
}
