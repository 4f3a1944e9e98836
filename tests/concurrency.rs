//! Many clients at once while a drone dies: every accepted task runs, none twice on live drones, and
//! no request hangs.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn hundreds_of_concurrent_submits_while_a_drone_is_killed() {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 60;
    let queen = Larve::queen(&[FAST, &["--task-timeout", "1"]].concat());
    let mut drones = [
        Larve::drone(&queen.addr),
        Larve::drone(&queen.addr),
        Larve::drone(&queen.addr),
    ];
    let addrs: Vec<String> = drones.iter().map(|d| d.addr.clone()).collect();
    wait_for_drones(
        &queen,
        &addrs.iter().map(String::as_str).collect::<Vec<_>>(),
        SOON,
    );

    let sent = AtomicUsize::new(0);
    let mut accepted = Vec::new();
    let mut slowest = Duration::ZERO;
    thread::scope(|scope| {
        let clients: Vec<_> = (0..THREADS)
            .map(|t| {
                let (queen, sent) = (&queen, &sent);
                scope.spawn(move || {
                    let mut mine = Vec::new();
                    let mut slowest = Duration::ZERO;
                    for i in 0..PER_THREAD {
                        let text = format!("task-{t}-{i}");
                        let asked = Instant::now();
                        let (status, reply) = submit(queen, &text);
                        slowest = slowest.max(asked.elapsed());
                        sent.fetch_add(1, Ordering::Relaxed);
                        assert_eq!(status, 200, "{text}: {reply}");
                        mine.push(text);
                    }
                    (mine, slowest)
                })
            })
            .collect();
        // Kill a drone a third of the way in, with requests in flight.
        eventually(SOON, "a third of the tasks to be sent", || {
            (sent.load(Ordering::Relaxed) >= THREADS * PER_THREAD / 3).then_some(())
        });
        drones[0].kill();
        for client in clients {
            let (mine, slow) = client.join().expect("a client thread");
            accepted.extend(mine);
            slowest = slowest.max(slow);
        }
    });

    assert_eq!(accepted.len(), THREADS * PER_THREAD);
    assert!(
        slowest < Duration::from_secs(5),
        "a submit took {slowest:?}"
    );
    let mut printed: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, drone) in drones.iter().enumerate() {
        for line in drone.stdout().lines() {
            printed.entry(line.to_string()).or_default().push(i);
        }
    }
    for text in &accepted {
        let by = printed.get(text).map(Vec::as_slice).unwrap_or_default();
        // At least once: a copy on the killed drone may have run just before it died.
        let on_live = by.iter().filter(|&&i| i != 0).count();
        assert!(
            by.len() == 1 || (by.len() == 2 && on_live == 1),
            "{text} was printed by drones {by:?}"
        );
    }
    assert_eq!(
        printed.len(),
        accepted.len(),
        "nothing was printed that was not accepted"
    );
}
