use super::*;
use std::path::Path;

fn item(key: &str, source_id: Option<&str>) -> NewItem {
    NewItem {
        source: "test".into(),
        source_id: source_id.map(str::to_string),
        kind: "test.event".into(),
        key: key.into(),
        schema: "test@1".into(),
        payload: br#"{"n":1}"#.to_vec(),
        reply: Some(b"ACK".to_vec()),
        occurred_at: None,
        destinations: vec!["cloud".into()],
    }
}

fn open(path: &Path) -> Store {
    Store::open(
        path,
        &OpenOptions {
            create: true,
            verify: true,
            key: None,
        },
        &[],
    )
    .expect("open")
}

fn refusal(path: &Path) -> JournalError {
    Store::open(
        path,
        &OpenOptions {
            create: true,
            verify: true,
            key: None,
        },
        &[],
    )
    .err()
    .expect("refused")
}

fn policy(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        initial: Duration::from_millis(1000),
        max: Duration::from_millis(8000),
    }
}

/// The writer's settings for a test: a size limit, and defaults otherwise.
fn writer_settings(max_bytes: u64) -> Settings {
    Settings {
        max_bytes,
        retention: Duration::from_secs(3600),
        max_batch: 64,
        policies: BTreeMap::new(),
        extensions: Extensions::default(),
    }
}

/// Appends `keys` in order and returns the outbox ids.
fn check_append(store: &mut Store, keys: &[&str]) -> Vec<i64> {
    store
        .with_batch(|b| {
            keys.iter()
                .map(|k| b.append(&item(k, None), 1_000).map(|r| r.inbound_id))
                .collect()
        })
        .expect("append")
}

fn claimed_keys(store: &mut Store, now: i64) -> Vec<(i64, String)> {
    store
        .with_batch(|b| b.claim("cloud", 100, now))
        .expect("claim")
        .into_iter()
        .map(|r| (r.id, r.key().to_string()))
        .collect()
}

#[test]
fn key_waits_while_its_head_retries_and_other_keys_flow() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = open(&dir.path().join("j.db"));
    check_append(&mut s, &["a", "b", "a", "b"]);
    let first = claimed_keys(&mut s, 1_000);
    assert_eq!(first.len(), 4);
    // The first "a" fails; the rest were delivered except the second "a" which is put back.
    s.with_batch(|b| {
        b.delivered(&[2, 4], 1_001)?;
        b.failed(&[1, 3], "broker gone", &policy(5), 1_001)
    })
    .expect("settle");
    // Both "a" rows wait; a new "b" and a new "c" flow.
    check_append(&mut s, &["b", "c", "a"]);
    let next = claimed_keys(&mut s, 1_002);
    assert_eq!(
        next.iter().map(|(_, k)| k.as_str()).collect::<Vec<_>>(),
        ["b", "c"]
    );
    // After the backoff (at most `max`), the "a" rows come in their original order.
    let later = claimed_keys(&mut s, 1_001 + 10_000);
    assert_eq!(
        later.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [1, 3, 7]
    );
}

#[test]
fn an_interrupted_claim_gives_its_attempts_back_but_the_blamed_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = open(&dir.path().join("j.db"));
    check_append(&mut s, &["a", "b", "c"]);
    assert_eq!(claimed_keys(&mut s, 1_000).len(), 3);
    let (retrying, dead) = s
        .with_batch(|b| b.interrupted("cloud", Some(2), "link lost", &policy(1), 1_001))
        .expect("put back");
    assert_eq!((retrying, dead), (2, 1));
    // At once, each on its first attempt again; the blamed row used its only one.
    let again = s
        .with_batch(|b| b.claim("cloud", 10, 1_001))
        .expect("claim");
    let again: Vec<(i64, u32)> = again.iter().map(|r| (r.id, r.attempts)).collect();
    assert_eq!(again, [(1, 1), (3, 1)]);
    let dead = s
        .with_batch(|b| b.dead_letters(Some("cloud"), 10))
        .expect("dead");
    assert_eq!((dead.len(), dead[0].id), (1, 2));
}

#[test]
fn dead_letter_after_max_attempts_and_replay_is_audited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = open(&dir.path().join("j.db"));
    check_append(&mut s, &["k"]);
    let mut now = 1_000;
    for attempt in 1..=3 {
        let rows = s.with_batch(|b| b.claim("cloud", 10, now)).expect("claim");
        assert_eq!(rows.len(), 1, "attempt {attempt}");
        assert_eq!(rows[0].attempts, attempt);
        s.with_batch(|b| b.failed(&[rows[0].id], "refused", &policy(3), now))
            .expect("fail");
        now += 100_000;
    }
    let dead = s
        .with_batch(|b| b.dead_letters(Some("cloud"), 10))
        .expect("dead");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].last_error, "refused");
    assert_eq!(dead[0].attempts, 3);
    // A dead head no longer holds its key back.
    check_append(&mut s, &["k"]);
    assert_eq!(claimed_keys(&mut s, now), [(2, "k".to_string())]);
    let n = s
        .with_batch(|b| b.replay("cloud", Some(dead[0].id), "cli:test", now))
        .expect("replay");
    assert_eq!(n, 1);
    assert_eq!(claimed_keys(&mut s, now), [(1, "k".to_string())]);
    let audit = s.with_batch(|b| b.audit_rows(0, 10)).expect("audit");
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0].actor, "cli:test");
    assert_eq!(audit[0].action, "dlq-replay");
    assert!(audit[0].detail.contains("row 1"), "{audit:?}");
}

#[test]
fn resend_of_a_source_id_gets_the_first_receipt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = open(&dir.path().join("j.db"));
    let (a, b) = s
        .with_batch(|b| {
            Ok((
                b.append(&item("p1", Some("MSG1")), 1)?,
                b.append(&item("p1", Some("MSG1")), 2)?,
            ))
        })
        .expect("append");
    assert!(!a.duplicate);
    assert!(b.duplicate);
    assert_eq!(a.event_id, b.event_id);
    assert_eq!(b.reply.as_deref(), Some(&b"ACK"[..]));
    assert_eq!(claimed_keys(&mut s, 10).len(), 1, "processed once");
}

/// A journal back as version 11 wrote it: delivered rows in state 2, the pending ones indexed
/// by their destination's name, no destination numbers.
const BACK_TO_VERSION_11: &str = "DROP INDEX outbox_pending;
    ALTER TABLE outbox DROP COLUMN destination_no;
    DROP TABLE outbox_destination;
    CREATE INDEX outbox_pending ON outbox(destination, id) WHERE state = 0;
    UPDATE outbox SET state = 2 WHERE state = 1;
    PRAGMA user_version = 11;";

#[test]
fn rows_in_flight_at_a_crash_are_handed_out_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.db");
    let mut s = open(&path);
    check_append(&mut s, &["a", "b", "c"]);
    assert_eq!(claimed_keys(&mut s, 1_000).len(), 3);
    assert_eq!(claimed_keys(&mut s, 1_000).len(), 0, "all three in flight");
    drop(s);
    // A journal of schema version 10 marked rows in flight in the table: one left so.
    let conn = rusqlite::Connection::open(&path).expect("reopen");
    conn.execute_batch(BACK_TO_VERSION_11).expect("version 11");
    conn.execute_batch(
        "CREATE INDEX outbox_in_flight ON outbox(id) WHERE state = 1;
         UPDATE outbox SET state = 1, attempts = 1 WHERE id = 3;
         PRAGMA user_version = 10;",
    )
    .expect("an older journal's row in flight");
    drop(conn);
    let mut s = open(&path);
    let now = crate::journal::now_ms();
    let again = s.with_batch(|b| b.claim("cloud", 10, now)).expect("claim");
    let again: Vec<(i64, u32)> = again.iter().map(|r| (r.id, r.attempts)).collect();
    assert_eq!(
        again,
        [(1, 1), (2, 1), (3, 2)],
        "the older journal's attempt counted"
    );
}

#[test]
fn an_older_journals_rows_keep_their_states_and_destinations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.db");
    let mut s = open(&path);
    s.with_batch(|b| {
        for key in ["a", "b"] {
            let mut item = item(key, None);
            item.destinations = vec!["ehr".into(), "cloud".into()];
            b.append(&item, 1_000)?;
        }
        Ok(())
    })
    .expect("append");
    // Rows 1 and 3 are ehr's, 2 and 4 the cloud's; the cloud's first delivered.
    let cloud = s.with_batch(|b| b.claim("cloud", 1, 1_000)).expect("claim");
    s.with_batch(|b| b.delivered(&[cloud[0].id], 1_000))
        .expect("mark");
    drop(s);
    let conn = rusqlite::Connection::open(&path).expect("reopen");
    conn.execute_batch(BACK_TO_VERSION_11)
        .expect("an older journal's delivered row");
    drop(conn);
    let mut s = open(&path);
    let states: Vec<_> = (1..=4)
        .map(|id| s.with_batch(|b| b.row_state(id)).expect("state"))
        .collect();
    assert_eq!(
        states,
        [
            Some("pending"),
            Some("delivered"),
            Some("pending"),
            Some("pending")
        ]
    );
    let stats = s
        .with_batch(|b| b.stats(u64::MAX, &BTreeMap::new()))
        .expect("stats");
    let pending: Vec<_> = stats
        .destinations
        .iter()
        .map(|(d, s)| (d.as_str(), s.pending))
        .collect();
    assert_eq!(pending, [("cloud", 1), ("ehr", 2)]);
    let ids = |s: &mut Store, destination| {
        s.with_batch(|b| b.claim(destination, 10, 1_000))
            .expect("claim")
            .iter()
            .map(|r| r.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&mut s, "ehr"), [1, 3]);
    assert_eq!(ids(&mut s, "cloud"), [4]);
    // A destination first seen after the migration is numbered after the older ones.
    let mut item = item("c", None);
    item.destinations = vec!["lab".into(), "cloud".into()];
    s.with_batch(|b| b.append(&item, 1_000)).expect("append");
    assert_eq!(ids(&mut s, "lab"), [5]);
    assert_eq!(ids(&mut s, "cloud"), [6]);
    let pruned = s.with_batch(|b| b.prune(5_000, 100)).expect("prune");
    assert_eq!(pruned, 1, "the delivered outbox row");
}

#[test]
fn a_destination_numbered_in_work_rolled_back_is_numbered_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = open(&dir.path().join("j.db"));
    let to = |key: &str, destination: &str| NewItem {
        destinations: vec![destination.into()],
        ..item(key, None)
    };
    let extensions = Extensions::default();
    let rolled_back: Result<(), JournalError> = s.with_batch(|b| {
        b.append(&to("a", "lab"), 1_000)?;
        Err(JournalError::Rejected("rolled back".into()))
    });
    assert!(rolled_back.is_err());
    s.with_batch(|b| {
        {
            let work = b.savepoint()?;
            Tx::new(&work, work.numbers(), 1_000, &extensions)
                .append(&to("b", "pharmacy"), 1_000)?;
        }
        b.append(&to("c", "cloud"), 1_000).map(drop)
    })
    .expect("the savepoint rolled back, the batch committed");
    s.with_batch(|b| {
        b.append(&to("d", "lab"), 1_000)?;
        b.append(&to("e", "pharmacy"), 1_000)?;
        b.append(&to("f", "cloud"), 1_000).map(drop)
    })
    .expect("append");
    for (destination, keys) in [
        ("lab", ["d"].as_slice()),
        ("pharmacy", &["e"]),
        ("cloud", &["c", "f"]),
    ] {
        let claimed = s
            .with_batch(|b| b.claim(destination, 10, 1_000))
            .expect("claim");
        let claimed: Vec<&str> = claimed.iter().map(|r| r.key()).collect();
        assert_eq!(claimed, keys, "{destination}");
    }
}

#[test]
fn a_row_whose_columns_are_not_what_the_journal_wrote_is_refused_by_name() {
    for (spoil, column, found) in [
        ("UPDATE inbound SET kind = X'FF'", "kind", "Blob"),
        ("UPDATE inbound SET payload = 'text'", "payload", "Text"),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("j.db");
        let mut s = open(&path);
        check_append(&mut s, &["a"]);
        let conn = rusqlite::Connection::open(&path).expect("reopen");
        conn.execute(spoil, []).expect("spoil the row");
        drop(conn);
        let claimed = s.with_batch(|b| b.claim("cloud", 1, 1_000));
        let Err(JournalError::Sqlite(e)) = claimed else {
            panic!("{column} read as it was: {claimed:?}");
        };
        assert!(e.contains(column) && e.contains(found), "{e}");
    }
}

#[test]
fn a_claim_reads_from_its_mark_and_every_row_put_back_below_it_is_read_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = open(&dir.path().join("j.db"));
    check_append(&mut s, &["a", "b", "c", "d", "e", "f"]);
    let claim = |s: &mut Store, limit, now| -> Vec<i64> {
        s.with_batch(|b| b.claim("cloud", limit, now))
            .expect("claim")
            .iter()
            .map(|r| r.id)
            .collect()
    };
    assert_eq!(claim(&mut s, 2, 1_000), [1, 2]);
    assert_eq!(claim(&mut s, 2, 1_000), [3, 4]);
    // Row 2 fails (its key waits), row 1 is dead, a rolled-back batch's claim never happened.
    s.with_batch(|b| {
        b.failed(&[2], "refused", &policy(5), 1_000)?;
        b.failed(&[1], "refused", &policy(1), 1_000)
    })
    .expect("settle");
    let rolled_back: Result<(), JournalError> = s.with_batch(|b| {
        assert_eq!(b.claim("cloud", 10, 1_000)?.len(), 2);
        Err(JournalError::Rejected("rolled back".into()))
    });
    assert!(rolled_back.is_err());
    assert_eq!(claim(&mut s, 10, 1_000), [5, 6]);
    // Connection lost: rows 3 to 6 back in line, each read again.
    s.with_batch(|b| b.interrupted("cloud", None, "lost", &policy(5), 1_000))
        .expect("interrupted");
    assert_eq!(claim(&mut s, 10, 1_000), [3, 4, 5, 6]);
    // Row 2 after its backoff; row 1 replayed.
    assert_eq!(claim(&mut s, 10, 1_000 + 60_000), [2]);
    s.with_batch(|b| b.replay("cloud", Some(1), "cli:test", 70_000))
        .expect("replay");
    assert_eq!(claim(&mut s, 10, 70_000), [1]);
    check_append(&mut s, &["g"]);
    assert_eq!(claim(&mut s, 10, 70_000), [7]);
    let stats = s
        .with_batch(|b| {
            let held = b.held();
            b.stats(u64::MAX, &held)
        })
        .expect("stats");
    let cloud = &stats.destinations["cloud"];
    assert_eq!((cloud.pending, cloud.in_flight), (0, 7), "{stats:?}");
}

#[test]
fn pruning_keeps_everything_not_delivered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = open(&dir.path().join("j.db"));
    check_append(&mut s, &["a", "b", "c"]);
    claimed_keys(&mut s, 1_000);
    s.with_batch(|b| {
        b.delivered(&[1], 1_000)?;
        b.failed(&[2], "x", &policy(1), 1_000)
    })
    .expect("settle");
    let pruned = s.with_batch(|b| b.prune(5_000, 100)).expect("prune");
    assert_eq!(pruned, 2, "the delivered outbox row and its inbound item");
    let mut states = Vec::new();
    for id in 1..=3 {
        states.push(s.with_batch(|b| b.row_state(id)).expect("state"));
    }
    assert_eq!(states, [None, Some("dead"), Some("in_flight")]);
}

#[test]
fn newer_schema_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.db");
    drop(open(&path));
    let c = rusqlite::Connection::open(&path).expect("raw open");
    c.pragma_update(None, "user_version", 99).expect("bump");
    drop(c);
    let err = refusal(&path);
    assert!(
        matches!(err, JournalError::TooNew { found: 99, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("newer than this build supports"));
}

#[test]
fn foreign_or_garbage_files_are_refused_and_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![0x5a; 8192]).expect("write");
    let err = refusal(&garbage);
    assert!(err.to_string().contains("left untouched"), "{err}");
    assert_eq!(std::fs::read(&garbage).expect("read"), vec![0x5a; 8192]);

    let foreign = dir.path().join("foreign.db");
    let c = rusqlite::Connection::open(&foreign).expect("raw open");
    c.execute_batch("CREATE TABLE patients (id INTEGER)")
        .expect("create");
    drop(c);
    let err = refusal(&foreign);
    assert!(
        err.to_string().contains("not a clinic-gateway journal"),
        "{err}"
    );
}

#[test]
fn writer_refuses_appends_when_full_and_keeps_what_it_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.db");
    let store = open(&path);
    let settings = writer_settings(256 * 1024);
    let acked = actix::System::new().block_on(async move {
        let (addr, _thread) = JournalWriter::start(store, settings).expect("start");
        let mut acked = 0u64;
        let mut refusal = None;
        for i in 0..10_000 {
            let mut it = item("k", Some(&format!("id-{i}")));
            it.payload = vec![b'x'; 512];
            match ask(&addr, Append(it)).await {
                Ok(_) => acked += 1,
                Err(e) => {
                    refusal = Some(e);
                    break;
                }
            }
        }
        let e = refusal.expect("the journal filled up");
        assert!(matches!(e, JournalError::Full { .. }), "{e}");
        assert!(e.to_string().contains("not accepted"));
        ask(&addr, Close).await.expect("close");
        acked
    });
    let mut s = open(&path);
    let stats = s
        .with_batch(|b| b.stats(0, &Default::default()))
        .expect("stats");
    assert_eq!(
        stats.destinations["cloud"].pending, acked,
        "every acknowledged item is kept"
    );
}

#[cfg(not(feature = "sqlcipher"))]
#[test]
fn a_key_without_a_sqlcipher_build_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opened = Store::open(
        &dir.path().join("j.db"),
        &OpenOptions {
            create: true,
            verify: true,
            key: Some("secret".into()),
        },
        &[],
    );
    let e = opened.err().expect("a plain build refuses a key");
    assert!(e.to_string().contains("no SQLCipher support"), "{e}");
}

/// Patient data at rest: with a SQLCipher build the journal file is unreadable without its key.
#[cfg(feature = "sqlcipher")]
#[test]
fn an_encrypted_journal_opens_only_with_its_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.db");
    let keyed = |key: Option<&str>, create: bool| {
        Store::open(
            &path,
            &OpenOptions {
                create,
                verify: true,
                key: key.map(str::to_string),
            },
            &[],
        )
    };
    {
        let mut store = keyed(Some("right"), true).expect("create encrypted");
        let mut secret = item("patient-1", Some("m1"));
        secret.payload = br#"{"family":"Nguyen-Secret"}"#.to_vec();
        store.with_batch(|b| b.append(&secret, 1)).expect("append");
        store.checkpoint().expect("checkpoint");
    }
    let bytes = std::fs::read(&path).expect("read file");
    assert!(
        !bytes.windows(13).any(|w| w == b"Nguyen-Secret"),
        "no plaintext on disk"
    );
    let mut store = keyed(Some("right"), false).expect("reopen with the key");
    let stats = store
        .with_batch(|b| b.stats(0, &Default::default()))
        .expect("stats");
    assert_eq!(stats.destinations["cloud"].pending, 1);
    drop(store);
    for wrong in [None, Some("wrong")] {
        let e = keyed(wrong, false).err().expect("refused");
        assert!(
            e.to_string()
                .contains("not a readable clinic-gateway journal"),
            "{e}"
        );
    }
}

/// A domain's work that appends an item and is then refused.
struct RefusedAfterAppend;

impl Work for RefusedAfterAppend {
    type Output = ();
    fn run(self, tx: &mut Tx<'_>) -> Result<(), JournalError> {
        tx.append(&item("refused", Some("work-1")), tx.now())?;
        Err(JournalError::Rejected("not in this state".into()))
    }
}

crate::journal_work!(RefusedAfterAppend);

/// A domain's work that appends an item and then panics (a bug).
struct PanicsAfterAppend;

impl Work for PanicsAfterAppend {
    type Output = ();
    fn run(self, tx: &mut Tx<'_>) -> Result<(), JournalError> {
        tx.append(&item("panicked", Some("work-2")), tx.now())?;
        panic!("a bug in a request")
    }
}

crate::journal_work!(PanicsAfterAppend);

#[test]
fn a_work_refused_or_panicking_is_undone_alone_and_the_rest_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir.path().join("j.db"));
    let settings = writer_settings(1 << 30);
    actix::System::new().block_on(async move {
        let (j, _thread) = JournalWriter::start(store, settings).expect("start");
        let (refused, panicked, appended) = tokio::join!(
            ask(&j, RefusedAfterAppend),
            ask(&j, PanicsAfterAppend),
            ask(&j, Append(item("kept", Some("append-1"))))
        );
        assert!(matches!(refused, Err(JournalError::Rejected(_))));
        assert!(
            matches!(panicked, Err(JournalError::Closed)),
            "{panicked:?}"
        );
        assert!(!appended.expect("append").duplicate);
        ask(&j, Append(item("later", Some("append-2"))))
            .await
            .expect("the writer goes on after a panic");
        assert_eq!(claimed_cloud_keys(&j).await, ["kept", "later"]);
    });
}

/// The keys of the cloud rows the writer `j` lets a connector claim now, in order.
async fn claimed_cloud_keys(j: &Addr<JournalWriter>) -> Vec<String> {
    let claim = Claim {
        destination: "cloud".into(),
        limit: 10,
    };
    let rows = ask(j, claim).await.expect("claim");
    rows.into_iter().map(|r| r.key().to_string()).collect()
}

/// Walks the whole audit chain of `store`; panics naming the first broken record.
fn check_chain(store: &mut Store) -> chain::Head {
    let rows = store
        .with_batch(|b| b.audit_rows(0, 1_000))
        .expect("audit rows");
    let mut walk = chain::Walk::new(None);
    for row in &rows {
        walk.step(row).unwrap_or_else(|e| panic!("{e}"));
    }
    walk.finish().unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_audit_chain_continues_across_batches_and_over_a_rolled_back_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = open(&dir.path().join("j.db"));
    assert_eq!(check_chain(&mut s), chain::Head::empty());
    s.with_batch(|b| {
        b.audit("cli:a", "dlq-replay", "one", 1_000)?;
        b.audit("cli:a", "dlq-replay", "two", 1_001)
    })
    .expect("first batch");
    let mut rolled_back = s.begin().expect("begin");
    rolled_back
        .audit("cli:b", "dlq-replay", "never committed", 1_002)
        .expect("audit");
    drop(rolled_back);
    s.with_batch(|b| b.audit("cli:c", "config-reload", "three", 1_003))
        .expect("third batch");
    let head = check_chain(&mut s);
    assert_eq!((head.last_id, head.count), (3, 3));
    assert_eq!(
        s.with_batch(|b| GetAuditHead.run(&mut b.work(&Extensions::default())))
            .expect("head"),
        head,
        "the stored head is the verified one"
    );
}

/// A domain's work that audits and is then refused: its record goes with it.
struct RefusedAfterAudit;

impl Work for RefusedAfterAudit {
    type Output = ();
    fn run(self, tx: &mut Tx<'_>) -> Result<(), JournalError> {
        tx.audit("work", "refused", "never committed", tx.now())?;
        Err(JournalError::Rejected("not in this state".into()))
    }
}

crate::journal_work!(RefusedAfterAudit);

#[test]
fn a_refused_work_inside_a_batch_leaves_the_audit_chain_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.db");
    let store = open(&path);
    let settings = writer_settings(1 << 30);
    let record = |detail: &str| AuditRecord {
        actor: "gateway".into(),
        action: "config-reload".into(),
        detail: detail.into(),
    };
    let head = actix::System::new().block_on(async move {
        let (j, thread) = JournalWriter::start(store, settings).expect("start");
        let (before, refused, after) = tokio::join!(
            ask(&j, record("before")),
            ask(&j, RefusedAfterAudit),
            ask(&j, record("after"))
        );
        before.expect("before");
        assert!(matches!(refused, Err(JournalError::Rejected(_))));
        after.expect("after");
        let head = ask(&j, GetAuditHead).await.expect("head");
        ask(&j, Close).await.expect("close");
        drop(j);
        thread.join().expect("writer thread");
        head
    });
    let mut s = open(&path);
    assert_eq!(check_chain(&mut s), head);
    assert_eq!(head.count, 2);
}

#[test]
fn migration_chains_the_audit_rows_of_an_older_journal_in_id_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.db");
    drop(open(&path));
    // Back to the journal as version 8 wrote it: audit rows without hashes.
    let conn = rusqlite::Connection::open(&path).expect("sqlite");
    conn.execute_batch(BACK_TO_VERSION_11).expect("version 11");
    conn.execute_batch(
        "ALTER TABLE audit DROP COLUMN prev_hash;
         ALTER TABLE audit DROP COLUMN hash;
         DROP INDEX outbox_pending;
         DROP INDEX outbox_dead;
         CREATE INDEX outbox_by_state ON outbox(state, destination, id);
         INSERT INTO audit (at, actor, action, detail) VALUES
             (1000, 'gateway', 'config-reload', 'by=api ok'),
             (1001, 'cli:root', 'dlq-replay', 'destination=cloud all replayed=0');
         PRAGMA user_version = 8;",
    )
    .expect("version 8 journal");
    drop(conn);
    let mut s = open(&path);
    let rows = s.with_batch(|b| b.audit_rows(0, 10)).expect("rows");
    assert_eq!(rows[0].prev_hash, chain::GENESIS);
    assert_eq!(
        rows[1].hash,
        chain::seal(
            &rows[0].hash,
            2,
            1001,
            "cli:root",
            "dlq-replay",
            "destination=cloud all replayed=0"
        )
    );
    s.with_batch(|b| b.audit("gateway", "config-reload", "after the migration", 2_000))
        .expect("audit");
    assert_eq!(check_chain(&mut s).count, 3);
}

#[test]
fn reads_by_state_never_walk_the_delivered_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.db");
    drop(open(&path));
    let conn = rusqlite::Connection::open(&path).expect("reopen");
    for sql in [
        store::PENDING_AFTER,
        store::WAITING_KEYS,
        store::DEAD_LETTERS,
        store::STATE_COUNTS,
    ] {
        let mut explain = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .expect("explain");
        let unbound = vec![None::<i64>; explain.parameter_count()];
        let plan: Vec<String> = explain
            .query_map(rusqlite::params_from_iter(unbound), |r| r.get(3))
            .expect("plan")
            .collect::<Result<_, _>>()
            .expect("rows");
        let walks = plan
            .iter()
            .any(|step| step == "SCAN o" || step == "SCAN outbox");
        assert!(!walks, "{sql}\nreads every outbox row: {plan:#?}");
    }
}

#[test]
fn marks_by_runs_touch_exactly_the_rows_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = open(&dir.path().join("j.db"));
    check_append(&mut s, &["a", "b", "c", "d", "e", "f"]);
    let claimed: Vec<i64> = claimed_keys(&mut s, 1_000)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(claimed.len(), 6);
    // Two runs and a repeat, out of order; the fourth row stays in flight.
    let named = [
        claimed[5], claimed[0], claimed[1], claimed[4], claimed[1], claimed[2],
    ];
    let marked = s
        .with_batch(|b| b.delivered(&named, 2_000))
        .expect("delivered");
    assert_eq!(marked, 5);
    let states: Vec<_> = s
        .with_batch(|b| {
            claimed
                .iter()
                .map(|id| b.row_state(*id).map(Option::unwrap))
                .collect::<Result<Vec<_>, _>>()
        })
        .expect("states");
    assert_eq!(
        states,
        [
            "delivered",
            "delivered",
            "delivered",
            "in_flight",
            "delivered",
            "delivered"
        ]
    );
}

#[test]
fn a_query_reading_its_parameters_is_planned_once_whatever_is_bound() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = open(&dir.path().join("j.db"));
    let extensions = Extensions::default();
    let reprepared = s
        .with_batch(|b| {
            let tx = b.work(&extensions);
            let latest = "SELECT id FROM outbox WHERE destination = ?1 ORDER BY id DESC LIMIT 1";
            for (destination, after) in [("cloud", 0), ("ehr", 5), ("cloud", 9)] {
                tx.sql()
                    .prepare_cached(store::PENDING_AFTER)?
                    .query_map(rusqlite::params![destination, after], |_| Ok(()))?
                    .count();
                tx.sql()
                    .prepare_cached(latest)?
                    .query_map([destination], |_| Ok(()))?
                    .count();
            }
            let count = |sql| {
                tx.sql()
                    .prepare_cached(sql)
                    .map(|s| s.get_status(rusqlite::StatementStatus::RePrepare))
            };
            Ok((count(store::PENDING_AFTER)?, count(latest)?))
        })
        .expect("queries");
    assert_eq!(
        reprepared,
        (0, 0),
        "statements planned again on a new binding"
    );
}

#[cfg(feature = "fault-hooks")]
#[test]
#[expect(
    clippy::await_holding_lock,
    reason = "the held lock stands for a slow count on the reader's thread; what is awaited runs on the writer's"
)]
fn the_backlog_is_counted_beside_the_writer_and_takes_in_what_was_sent_before() {
    on_a_writer_holding_a(|addr| async move {
        let held = STATS_HELD.lock().expect("hold the counts");
        // Queued in the mailbox now, ahead of the append below.
        let counting = addr.send(GetStats);
        append_b_beside(&addr, "count").await;
        drop(held);
        let stats = counting.await.expect("mailbox").expect("stats");
        assert!(
            (1..=2).contains(&stats.destinations["cloud"].pending),
            "{stats:?}"
        );
        let after = ask(&addr, GetStats).await.expect("stats");
        assert_eq!(after.destinations["cloud"].pending, 2, "{after:?}");
    });
}

/// Runs `body` on a writer over a fresh journal holding one cloud item ("a"), then closes it.
fn on_a_writer_holding_a<F: std::future::Future<Output = ()>>(
    body: impl FnOnce(Addr<JournalWriter>) -> F,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir.path().join("j.db"));
    actix::System::new().block_on(async move {
        let settings = writer_settings(64 * 1024 * 1024);
        let (addr, _thread) = JournalWriter::start(store, settings).expect("start");
        ask(&addr, Append(item("a", None))).await.expect("append");
        body(addr.clone()).await;
        ask(&addr, Close).await.expect("close");
    });
}

/// Commits a second cloud item ("b") while a `read` is held up on the reader: a writer that
/// ran the read itself would wait for it.
async fn append_b_beside(addr: &Addr<JournalWriter>, read: &str) {
    tokio::time::timeout(Duration::from_secs(30), ask(addr, Append(item("b", None))))
        .await
        .unwrap_or_else(|_| panic!("the append waited for the {read}"))
        .expect("append beside a read");
}

#[test]
fn a_clean_stop_after_counting_leaves_the_journal_one_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.db");
    let store = open(&path);
    let thread = actix::System::new().block_on(async move {
        let settings = writer_settings(64 * 1024 * 1024);
        let (addr, thread) = JournalWriter::start(store, settings).expect("start");
        ask(&addr, Append(item("a", None))).await.expect("append");
        let stats = ask(&addr, GetStats).await.expect("stats");
        assert_eq!(stats.destinations["cloud"].pending, 1, "{stats:?}");
        ask(&addr, Close).await.expect("close");
        thread
    });
    thread.join().expect("writer thread");
    assert!(path.exists());
    assert!(
        !path.with_extension("db-wal").exists(),
        "the reader's connection outlived the writer's"
    );
}

/// A read that counts the inbound items, says so, and answers only once `release` is sent:
/// it stands for a long report.
struct HeldRead {
    counted: std::sync::mpsc::Sender<()>,
    release: std::sync::mpsc::Receiver<()>,
}

impl Work for HeldRead {
    type Output = i64;
    const READ_ONLY: bool = true;
    fn run(self, tx: &mut Tx<'_>) -> Result<i64, JournalError> {
        let n = tx
            .sql()
            .query_row("SELECT count(*) FROM inbound", [], |r| r.get(0))?;
        let _ = self.counted.send(());
        let _ = self.release.recv();
        Ok(n)
    }
}

/// A work that says it only reads, and writes.
struct WritingRead;

impl Work for WritingRead {
    type Output = ();
    const READ_ONLY: bool = true;
    fn run(self, tx: &mut Tx<'_>) -> Result<(), JournalError> {
        tx.audit("test", "write", "from a read", tx.now())
    }
}

/// A read that panics.
struct PanickingRead;

impl Work for PanickingRead {
    type Output = ();
    const READ_ONLY: bool = true;
    fn run(self, _: &mut Tx<'_>) -> Result<(), JournalError> {
        panic!("a bug in a read")
    }
}

crate::journal_work!(HeldRead, WritingRead, PanickingRead);

#[test]
fn a_read_runs_beside_the_writer_reads_one_moment_and_fails_alone() {
    on_a_writer_holding_a(|addr| async move {
        let (counted, counting) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel();
        let reading = addr.send(HeldRead {
            counted,
            release: released,
        });
        let counting = tokio::task::spawn_blocking(move || counting.recv());
        counting.await.expect("join").expect("the read counted");
        append_b_beside(&addr, "read").await;
        release.send(()).expect("release");
        let n = reading.await.expect("mailbox").expect("read");
        assert_eq!(n, 1, "the read saw one moment of the journal");
        let refused = ask(&addr, WritingRead)
            .await
            .expect_err("a read cannot write");
        assert!(refused.to_string().contains("readonly"), "{refused}");
        ask(&addr, PanickingRead)
            .await
            .expect_err("a read that panics is refused");
        let stats = ask(&addr, GetStats)
            .await
            .expect("reads go on after a panic");
        assert_eq!(stats.destinations["cloud"].pending, 2, "{stats:?}");
    });
}

/// A request that appends `key` and puts off appending `then` (see [`Tx::later`]); refused
/// after that when `refuse`.
struct PutsOff {
    key: &'static str,
    then: &'static str,
    refuse: bool,
}

struct Appends(&'static str);

impl Work for PutsOff {
    type Output = ();
    fn run(self, tx: &mut Tx<'_>) -> Result<(), JournalError> {
        tx.append(&item(self.key, Some(self.key)), tx.now())?;
        tx.later(Appends(self.then));
        match self.refuse {
            true => Err(JournalError::Rejected("not in this state".into())),
            false => Ok(()),
        }
    }
}

impl Work for Appends {
    type Output = ();
    fn run(self, tx: &mut Tx<'_>) -> Result<(), JournalError> {
        tx.append(&item(self.0, Some(self.0)), tx.now()).map(|_| ())
    }
}

crate::journal_work!(PutsOff);

#[test]
fn work_put_off_runs_once_the_writer_is_free_and_only_if_its_request_committed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir.path().join("j.db"));
    let settings = writer_settings(1 << 30);
    actix::System::new().block_on(async move {
        let (j, _thread) = JournalWriter::start(store, settings).expect("start");
        let signal = signal(&j, "cloud").await;
        let (kept, refused) = tokio::join!(
            ask(
                &j,
                PutsOff {
                    key: "check-in",
                    then: "inquiry",
                    refuse: false,
                }
            ),
            ask(
                &j,
                PutsOff {
                    key: "refused",
                    then: "never",
                    refuse: true,
                }
            ),
        );
        kept.expect("committed");
        assert!(matches!(refused, Err(JournalError::Rejected(_))));
        let mut claimed = Vec::new();
        while !claimed.iter().any(|k| k == "inquiry") {
            let found = claimed_cloud_keys(&j).await;
            if found.is_empty() {
                signal.notified().await;
            }
            claimed.extend(found);
        }
        assert_eq!(claimed, ["check-in", "inquiry"]);
    });
}

#[test]
fn a_burst_of_writes_puts_off_work_until_none_came_for_a_while_and_lone_writes_do_not() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let mut writes = Writes::default();
    let mut quiet = t0;
    let mut seen = |writes: &mut Writes, n: usize, now: Instant| {
        if let Some(until) = writes.seen(n, now, quiet) {
            quiet = until;
        }
        quiet
    };
    // Lone requesters, and reads, start no burst.
    assert_eq!(seen(&mut writes, 2, at(1)), t0);
    assert_eq!(seen(&mut writes, 0, at(2)), t0);
    assert_eq!(seen(&mut writes, 2, at(30)), t0);
    // Small batches close together do: the web server hands a burst over a few at a time.
    assert_eq!(seen(&mut writes, 3, at(33)), t0);
    assert_eq!(seen(&mut writes, 3, at(35)), at(35) + LATER_IDLE);
    // Within it, any write carries it on; a read does not.
    assert_eq!(seen(&mut writes, 1, at(40)), at(40) + LATER_IDLE);
    assert_eq!(seen(&mut writes, 0, at(45)), at(40) + LATER_IDLE);
    // Once it is over, a lone write starts nothing.
    assert_eq!(seen(&mut writes, 1, at(80)), at(40) + LATER_IDLE);
}

/// [`HeldRead`] as a long report.
struct HeldReport(HeldRead);

impl Work for HeldReport {
    type Output = i64;
    const READ_ONLY: bool = true;
    const LONG: bool = true;
    fn run(self, tx: &mut Tx<'_>) -> Result<i64, JournalError> {
        self.0.run(tx)
    }
}

crate::journal_work!(HeldReport);

#[test]
fn a_long_read_holds_up_neither_the_writer_nor_the_quick_reads() {
    on_a_writer_holding_a(|addr| async move {
        let (counted, counting) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel();
        let reporting = addr.send(HeldReport(HeldRead {
            counted,
            release: released,
        }));
        let counting = tokio::task::spawn_blocking(move || counting.recv());
        counting.await.expect("join").expect("the report counted");
        append_b_beside(&addr, "report").await;
        let quick = ListDead {
            destination: None,
            limit: 10,
        };
        let dead = tokio::time::timeout(Duration::from_secs(30), ask(&addr, quick))
            .await
            .expect("the board's read waited for the report")
            .expect("dead letters");
        assert!(dead.is_empty(), "{dead:?}");
        release.send(()).expect("release");
        let n = reporting.await.expect("mailbox").expect("report");
        assert_eq!(n, 1, "the report saw one moment of the journal");
    });
}

#[test]
fn the_oldest_waiting_is_when_the_first_queued_row_arrived_however_often_it_was_tried() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = open(&dir.path().join("j.db"));
    let mut b = store.begin().expect("begin");
    b.append(&item("k1", None), 1_000).expect("first");
    b.append(&item("k2", None), 2_000).expect("second");
    let claimed = b.claim("cloud", 1, 3_000).expect("claim");
    b.failed(&[claimed[0].id], "refused", &policy(5), 9_000)
        .expect("failed");
    let stats = b.stats(u64::MAX, &Default::default()).expect("stats");
    b.commit().expect("commit");
    let cloud = &stats.destinations["cloud"];
    assert_eq!((cloud.pending, cloud.in_flight), (2, 0), "{stats:?}");
    assert_eq!(cloud.oldest_pending_at, Some(1_000), "{stats:?}");
}

#[test]
fn a_replay_by_another_connection_is_claimed_while_rows_are_held() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.db");
    let mut daemon = open(&path);
    check_append(&mut daemon, &["a", "b"]);
    assert_eq!(claimed_keys(&mut daemon, 1_000).len(), 2);
    daemon
        .with_batch(|b| b.failed(&[1], "refused", &policy(1), 1_000))
        .expect("dead");
    let mut cli = open(&path);
    let n = cli
        .with_batch(|b| b.replay("cloud", Some(1), "cli:test", 2_000))
        .expect("replay");
    assert_eq!(n, 1);
    assert_eq!(claimed_keys(&mut daemon, 2_000), [(1, "a".to_string())]);
}
