//! (a) No remote kill: 10,000 unauthenticated `POST /submit_task` requests declaring 100 GB
//! bodies, with no body, from one peer, each held open once answered. Before the front door a
//! queen leaked a thread per such request and exited at about a thousand. The larve must keep
//! running, answer `/healthz` from another client within 50 ms throughout, and be back to its
//! threads and descriptors within 15 s of the client leaving.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use hive_support::procfs::{Sampler, Usage};
use hive_support::rawhttp;
use hive_support::wait;

use super::{LABEL, Prober, address_of, attacker, connect_from, still_running};
use crate::report::{Report, target};
use crate::scenarios::Bench;
use crate::scenarios::big_body::steady_usage;
use crate::{Result, progress};

/// Requests sent, from this many threads at once, all from one address.
const REQUESTS: usize = 10_000;
const ATTACKERS: usize = 4;

/// What each request declares.
const DECLARED_BYTES: u64 = 100_000_000_000;

/// How long a connection may take to open, and its answer to come.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// How soon after the client left its threads and descriptors must be back, how long the bench
/// waits for that, and how often it looks.
const BACK_SECS_TARGET: f64 = 15.0;
const BACK_TIMEOUT: Duration = Duration::from_secs(30);
const USAGE_POLL: Duration = Duration::from_millis(20);

/// The attacker threads only connect, write a head and read one: a small stack is plenty.
const STACK_BYTES: usize = 64 * 1024;

const PART: &str = "(a)";

/// What the attack got: answers by kind, and every connection, held open.
struct Attack {
    answers: BTreeMap<String, usize>,
    held: Vec<TcpStream>,
}

/// Runs the attack on a fresh queen and adds the rows.
pub fn run(bench: &Bench, report: &mut Report) -> Result<()> {
    let mut queen = bench.queen("front-kill-queen", &[])?;
    let pid = queen.pid();
    let address = address_of(&queen)?;
    let baseline = steady_usage(&queen)?;
    progress(&format!(
        "{PART}: {REQUESTS} requests declaring {DECLARED_BYTES} bytes from {}",
        attacker(0, 1)
    ));
    let sampler = Sampler::start(pid);
    let prober = Prober::start(&queen)?;
    let started = Instant::now();
    let attack = attack(address)?;
    let sent_in = started.elapsed();
    // The held connections are the attack: the larve is watched with all of them open.
    thread::sleep(bench.plan.attack_hold);
    let running = still_running(&mut queen);
    let held_usage = Usage::of(pid).ok();
    let probes = prober.finish();
    let peak = sampler.finish();
    drop(attack.held);
    let left = Instant::now();

    let answers: Vec<String> = attack
        .answers
        .iter()
        .map(|(answer, count)| format!("{count} × {answer}"))
        .collect();
    report.row(
        LABEL,
        format!(
            "{PART} {REQUESTS} requests declaring {DECLARED_BYTES}-byte bodies, no body, from one \
             peer, each held open: answers (all sent in s)"
        ),
        format!("{} ({:.1} s)", answers.join(", "), sent_in.as_secs_f64()),
        "-",
    );
    report.row(
        LABEL,
        format!("{PART} the larve after them"),
        if running { "running" } else { "exited" },
        target("keeps running", running),
    );
    probes.row(report, PART, "during the attack", true);
    report.note(format!(
        "{LABEL}: {PART} {ATTACKERS} threads connect from {} (one peer), each in turn: send `POST \
         /submit_task HTTP/1.1` with `Content-Length: {DECLARED_BYTES}` and no body, read the \
         answer's head (up to {} s), keep the connection open and go on with the next, \
         {REQUESTS} in all; the bench then holds them all {} s more before it closes them (the \
         client leaves). The baseline is read once threads and descriptors are steady (5 equal \
         readings 20 ms apart) on the fresh queen; with the connections held is read at the end \
         of the hold; back to baseline is polled every {} ms",
        attacker(0, 1),
        ANSWER_TIMEOUT.as_secs(),
        bench.plan.attack_hold.as_secs(),
        USAGE_POLL.as_millis()
    ));
    let Some(held_usage) = held_usage.filter(|_| running) else {
        return Err(format!(
            "the larve exited under the attack; its log: {}",
            queen.stderr()
        ));
    };
    report.row(
        LABEL,
        format!(
            "{PART} threads / descriptors: baseline → with the connections held (most threads)"
        ),
        format!(
            "{} / {} → {} / {} ({})",
            baseline.threads,
            baseline.descriptors,
            held_usage.threads,
            held_usage.descriptors,
            peak.max_threads
        ),
        "-",
    );
    let back = wait::poll(
        BACK_TIMEOUT,
        USAGE_POLL,
        "threads and descriptors back to their baseline",
        || Ok(Usage::of(pid)?.within(&baseline).then(|| left.elapsed())),
    );
    let (value, met) = match back {
        Ok(took) => (
            format!("{:.1}", took.as_secs_f64()),
            took.as_secs_f64() <= BACK_SECS_TARGET,
        ),
        Err(_) => {
            let now = Usage::of(pid)?;
            (
                format!(
                    "not within {} s ({} threads, {} descriptors)",
                    BACK_TIMEOUT.as_secs(),
                    now.threads,
                    now.descriptors
                ),
                false,
            )
        }
    };
    report.row(
        LABEL,
        format!("{PART} s until threads and descriptors are back to baseline once the client left"),
        value,
        target(&format!("≤ {BACK_SECS_TARGET:.0}"), met),
    );
    Ok(())
}

/// Sends [`REQUESTS`] requests from [`ATTACKERS`] threads at once and keeps every connection.
fn attack(address: SocketAddr) -> Result<Attack> {
    let head = format!(
        "POST /submit_task HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {DECLARED_BYTES}\r\n\r\n"
    );
    let results = thread::scope(|scope| {
        let handles = (0..ATTACKERS)
            .map(|i| {
                let head = head.as_bytes();
                let share = (i + 1) * REQUESTS / ATTACKERS - i * REQUESTS / ATTACKERS;
                thread::Builder::new()
                    .name("attacker".into())
                    .stack_size(STACK_BYTES)
                    .spawn_scoped(scope, move || one_attacker(address, head, share))
                    .map_err(|e| format!("cannot start attacker {i}: {e}"))
            })
            .collect::<Result<Vec<_>>>()?;
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| "an attacker panicked".to_string()))
            .collect::<Result<Vec<Attack>>>()
    })?;
    let mut all = Attack {
        answers: BTreeMap::new(),
        held: Vec::with_capacity(REQUESTS),
    };
    for part in results {
        for (answer, count) in part.answers {
            *all.answers.entry(answer).or_default() += count;
        }
        all.held.extend(part.held);
    }
    Ok(all)
}

/// One attacker thread: `count` requests in turn, each connection kept.
fn one_attacker(address: SocketAddr, head: &[u8], count: usize) -> Attack {
    let source = attacker(0, 1);
    let mut attack = Attack {
        answers: BTreeMap::new(),
        held: Vec::with_capacity(count),
    };
    for _ in 0..count {
        let answer = match connect_from(source, address, CONNECT_TIMEOUT) {
            Ok(mut stream) => {
                let answer = match stream.write_all(head) {
                    Ok(()) => rawhttp::final_status(&mut stream, Instant::now() + ANSWER_TIMEOUT)
                        .to_string(),
                    Err(e) => format!("write failed ({})", e.kind()),
                };
                attack.held.push(stream);
                answer
            }
            Err(e) => format!("connect failed ({})", e.kind()),
        };
        *attack.answers.entry(answer).or_default() += 1;
    }
    attack
}
