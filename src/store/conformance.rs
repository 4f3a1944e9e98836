//! One contract for every engine: the script the memory engine, the durable engine and etcd are all
//! checked against (as toydb checks its storage engines against one), so the store's code above
//! the [`Engine`] trait may count on exactly this and nothing an engine happens to do besides.
//!
//! [`check`] runs every part in turn and panics, as an assertion does, naming the part and what
//! the engine did instead. Revisions are read, never assumed: etcd's are shared by everything
//! else written there, so each part works under a prefix of its own and compares revisions with
//! the ones the engine gave before. Leases are left out: only etcd has them (the other engines
//! ignore the field), and only the election uses them.
//!
//! The unit tests of `local.rs` run it on the memory and durable engines; `tests/queens.rs` on a
//! real etcd.

use std::time::{Duration, Instant};

use super::engine::{Engine, Event, Kv, Txn, WatchMessage, prefix_end};

/// How long a watch is given to report what was already written.
const WATCH_WAIT: Duration = Duration::from_secs(5);

/// An engine to check, and what the suite cannot do through the trait.
pub struct Subject<'a> {
    pub engine: &'a dyn Engine,
    /// Keys the suite may write under, which nothing else writes; it ends with `/`.
    pub prefix: &'a str,
    /// Makes the engine forget the changes made before the revision given, as etcd's compaction
    /// does (`Local::compact` for the local engines).
    pub compact: &'a dyn Fn(i64),
}

/// Runs the whole contract on `subject`.
pub fn check(subject: &Subject) {
    revisions(subject);
    compares_and_branches(subject);
    ranges(subject);
    deletes(subject);
    watches_from_a_revision(subject);
    a_watch_from_a_compacted_revision_is_cancelled(subject);
    assert!(
        subject.engine.max_txn_ops() >= 2 && subject.engine.max_txn_bytes() >= 1024,
        "limits: an engine takes transactions of a few operations"
    );
}

/// `prefix` + `name` under the subject's prefix, for part `part`.
fn key(subject: &Subject, part: &str, name: &str) -> Vec<u8> {
    format!("{}{part}/{name}", subject.prefix).into_bytes()
}

fn put(engine: &dyn Engine, key: &[u8], value: &[u8]) -> i64 {
    let result = engine
        .txn(&Txn::new().put(key, value), None)
        .expect("a put");
    assert!(
        result.succeeded,
        "a txn without compares takes its success branch"
    );
    result.revision
}

fn get(engine: &dyn Engine, key: &[u8]) -> Option<Kv> {
    let (kvs, _) = engine.range(key, None).expect("a range");
    assert!(kvs.len() <= 1, "a range of one key finds at most it");
    kvs.into_iter().next()
}

/// Every write bumps the revision by one; a key keeps the revision that created it and carries
/// the one that last wrote it; a transaction's writes share one revision.
fn revisions(subject: &Subject) {
    let engine = subject.engine;
    let (a, b) = (
        key(subject, "revisions", "a"),
        key(subject, "revisions", "b"),
    );
    let (_, before) = engine.range(&a, None).expect("a range");
    let first = put(engine, &a, b"1");
    assert!(
        first > before,
        "revisions: a write moves the revision forward"
    );
    let kv = get(engine, &a).expect("revisions: the key just written");
    assert_eq!(
        (kv.value.as_slice(), kv.create_revision, kv.mod_revision),
        (&b"1"[..], first, first),
        "revisions: a new key is created and modified at its write's revision"
    );
    let second = put(engine, &a, b"2");
    assert_eq!(second, first + 1, "revisions: one write, one revision");
    let kv = get(engine, &a).expect("revisions: the key rewritten");
    assert_eq!(
        (kv.value.as_slice(), kv.create_revision, kv.mod_revision),
        (&b"2"[..], first, second),
        "revisions: a rewrite keeps the create revision"
    );
    let both = engine
        .txn(&Txn::new().put(&a, b"3").put(&b, b"3"), None)
        .expect("a txn");
    assert_eq!(
        both.revision,
        second + 1,
        "revisions: a txn's writes share one revision"
    );
    for k in [&a, &b] {
        assert_eq!(
            get(engine, k).map(|kv| kv.mod_revision),
            Some(both.revision)
        );
    }
    let (_, now) = engine.range(&a, None).expect("a range");
    assert!(
        now >= both.revision,
        "revisions: a range reads at the revision of the last write or later"
    );
}

/// Compares decide the branch; the failure branch reads; a txn that writes nothing leaves the
/// revision as it is.
fn compares_and_branches(subject: &Subject) {
    let engine = subject.engine;
    let (k, other) = (key(subject, "compares", "k"), key(subject, "compares", "o"));
    let created = engine
        .txn(&Txn::new().if_absent(&k).put(&k, b"v").or_read(&k), None)
        .expect("a txn");
    assert!(created.succeeded, "compares: if_absent holds for a new key");
    assert!(
        created.reads.is_empty(),
        "compares: no reads in that branch"
    );
    let again = engine
        .txn(&Txn::new().if_absent(&k).put(&k, b"w").or_read(&k), None)
        .expect("a txn");
    assert!(
        !again.succeeded,
        "compares: if_absent fails on an existing key"
    );
    assert_eq!(
        again.revision, created.revision,
        "compares: a failed compare writes nothing, so the revision stays"
    );
    let read = again.reads.first().cloned().flatten();
    assert_eq!(
        read.map(|kv| (kv.value, kv.mod_revision)),
        Some((b"v".to_vec(), created.revision)),
        "compares: the failure branch reads what the key holds"
    );
    let stale = engine
        .txn(
            &Txn::new()
                .if_modified_at(&k, created.revision - 1)
                .put(&k, b"x")
                .or_read(&other),
            None,
        )
        .expect("a txn");
    assert!(!stale.succeeded, "compares: a stale mod revision fails");
    assert_eq!(
        stale.reads,
        vec![None],
        "compares: a read of a missing key finds nothing"
    );
    let fresh = engine
        .txn(
            &Txn::new()
                .if_modified_at(&k, created.revision)
                .if_created_at(&k, created.revision)
                .if_created_at(&other, 0)
                .put(&k, b"y")
                .read(&other),
            None,
        )
        .expect("a txn");
    assert!(
        fresh.succeeded && fresh.revision == created.revision + 1,
        "compares: every compare holds, so the success branch writes at the next revision"
    );
    assert_eq!(fresh.reads, vec![None]);
    let wrong_create = engine
        .txn(
            &Txn::new().if_created_at(&k, fresh.revision).put(&k, b"z"),
            None,
        )
        .expect("a txn");
    assert!(
        !wrong_create.succeeded,
        "compares: a rewrite does not change the create revision"
    );
    let reads = engine
        .txn(&Txn::new().read(&k).read(&other), None)
        .expect("a txn of reads");
    assert!(reads.succeeded);
    assert_eq!(
        reads.revision, fresh.revision,
        "compares: a txn of reads writes nothing, so the revision stays"
    );
    assert_eq!(
        reads
            .reads
            .iter()
            .map(|kv| kv.as_ref().map(|kv| kv.value.clone()))
            .collect::<Vec<_>>(),
        vec![Some(b"y".to_vec()), None],
        "compares: reads come back in order"
    );
}

/// A range is `[key, end)`, sorted by key; one key alone when no end is given.
fn ranges(subject: &Subject) {
    let engine = subject.engine;
    let prefix = key(subject, "ranges", "");
    for name in ["c", "a", "b", "b/1"] {
        put(engine, &key(subject, "ranges", name), name.as_bytes());
    }
    let end = prefix_end(&prefix);
    let (kvs, _) = engine.range(&prefix, Some(&end)).expect("a range");
    let names: Vec<&[u8]> = kvs.iter().map(|kv| &kv.key[prefix.len()..]).collect();
    assert_eq!(
        names,
        [&b"a"[..], b"b", b"b/1", b"c"],
        "ranges: every key in [key, end), sorted"
    );
    let (kvs, _) = engine
        .range(
            &key(subject, "ranges", "b"),
            Some(&key(subject, "ranges", "c")),
        )
        .expect("a range");
    assert_eq!(kvs.len(), 2, "ranges: the end is left out");
    let (kvs, _) = engine
        .range(&key(subject, "ranges", "b"), None)
        .expect("a range");
    assert_eq!(kvs.len(), 1, "ranges: no end is one key");
}

/// A delete removes the key at a revision of its own; a key created again starts a new life.
fn deletes(subject: &Subject) {
    let engine = subject.engine;
    let (k, missing) = (key(subject, "deletes", "k"), key(subject, "deletes", "m"));
    let created = put(engine, &k, b"v");
    let deleted = engine.txn(&Txn::new().delete(&k), None).expect("a delete");
    assert_eq!(
        deleted.revision,
        created + 1,
        "deletes: a delete takes a revision"
    );
    assert_eq!(get(engine, &k), None, "deletes: the key is gone");
    let nothing = engine
        .txn(&Txn::new().delete(&missing), None)
        .expect("a delete");
    assert_eq!(
        nothing.revision, deleted.revision,
        "deletes: deleting a missing key changes nothing"
    );
    let again = put(engine, &k, b"w");
    assert_eq!(
        get(engine, &k).map(|kv| kv.create_revision),
        Some(again),
        "deletes: a key created again has a new create revision"
    );
}

/// Reads the next message that is not a progress notice, failing past `deadline`.
fn next(watch: &mut dyn super::engine::Watch, deadline: Instant) -> WatchMessage {
    loop {
        assert!(Instant::now() < deadline, "watches: no message in time");
        match watch.next_message().expect("a watch message") {
            Some(WatchMessage::Progress) => continue,
            Some(message) => return message,
            None => panic!("watches: the watch ended before its lifetime"),
        }
    }
}

/// A watch from a revision reports every change in its range made from that revision on, in
/// order, then the changes made while it waits.
fn watches_from_a_revision(subject: &Subject) {
    let engine = subject.engine;
    let prefix = key(subject, "watches", "");
    let end = prefix_end(&prefix);
    let (a, b) = (key(subject, "watches", "a"), key(subject, "watches", "b"));
    let outside = key(subject, "elsewhere", "x");
    let first = put(engine, &a, b"1");
    put(engine, &outside, b"not watched");
    let deleted = engine
        .txn(&Txn::new().delete(&a).put(&b, b"2"), None)
        .expect("a txn")
        .revision;
    let deadline = Instant::now() + WATCH_WAIT;
    let mut watch = engine
        .watch(&prefix, &end, first, WATCH_WAIT * 2)
        .expect("a watch");
    assert_eq!(
        next(watch.as_mut(), deadline),
        WatchMessage::Created,
        "watches: a watch says it is in place first"
    );
    let mut events = Vec::new();
    while events.len() < 3 {
        match next(watch.as_mut(), deadline) {
            WatchMessage::Events(more) => events.extend(more),
            other => panic!("watches: {other:?} instead of the changes"),
        }
    }
    let seen: Vec<(Vec<u8>, i64, bool)> = events
        .iter()
        .map(|event| match event {
            Event::Put(kv) => (kv.key.clone(), kv.mod_revision, true),
            Event::Delete { key, revision } => (key.clone(), *revision, false),
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (a.clone(), first, true),
            (a.clone(), deleted, false),
            (b.clone(), deleted, true)
        ],
        "watches: the range's changes from the start revision, in order, nothing outside it"
    );
    let later = put(engine, &b, b"3");
    match next(watch.as_mut(), Instant::now() + WATCH_WAIT) {
        WatchMessage::Events(events) => assert_eq!(
            events.iter().map(Event::revision).collect::<Vec<_>>(),
            vec![later],
            "watches: a change made while the watch waits"
        ),
        other => panic!("watches: {other:?} instead of the later change"),
    }
}

/// A watch whose start revision was compacted away is cancelled, saying where history starts.
fn a_watch_from_a_compacted_revision_is_cancelled(subject: &Subject) {
    let engine = subject.engine;
    let prefix = key(subject, "compaction", "");
    let end = prefix_end(&prefix);
    let old = put(engine, &key(subject, "compaction", "a"), b"1");
    let newer = put(engine, &key(subject, "compaction", "a"), b"2");
    (subject.compact)(newer);
    let deadline = Instant::now() + WATCH_WAIT;
    let mut watch = engine
        .watch(&prefix, &end, old, WATCH_WAIT * 2)
        .expect("a watch");
    let mut message = next(watch.as_mut(), deadline);
    if message == WatchMessage::Created {
        message = next(watch.as_mut(), deadline);
    }
    assert_eq!(
        message,
        WatchMessage::Canceled {
            compact_revision: newer
        },
        "compaction: a watch from before the compacted revision is cancelled"
    );
    let mut watch = engine
        .watch(&prefix, &end, newer, WATCH_WAIT * 2)
        .expect("a watch");
    assert_eq!(next(watch.as_mut(), deadline), WatchMessage::Created);
    match next(watch.as_mut(), deadline) {
        WatchMessage::Events(events) => assert_eq!(
            events.iter().map(Event::revision).collect::<Vec<_>>(),
            vec![newer],
            "compaction: a watch from the compacted revision itself still works"
        ),
        other => panic!("compaction: {other:?} instead of the kept change"),
    }
}
