use crate::journal::{Extensions, OpenOptions, Store};
use std::path::Path;

fn open(path: &Path) -> Store {
    Store::open(
        path,
        &OpenOptions {
            create: true,
            verify: true,
            key: None,
        },
        &[&super::SCHEMA],
    )
    .expect("open")
}

#[test]
fn overrides_are_remembered_per_slot_and_survive_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.db");
    let o = |object: &str, priority: u8, value: f64, set_at: i64| crate::devices::DeviceOverride {
        device: "ahu".into(),
        object: object.into(),
        priority,
        value: serde_json::json!(value),
        by: "rule:test".into(),
        set_at,
    };
    let mut s = open(&path);
    s.with_batch(|b| {
        super::set_override(
            &mut b.work(&Extensions::default()),
            &o("analog-value,1", 8, 23.5, 1),
        )?;
        super::set_override(
            &mut b.work(&Extensions::default()),
            &o("analog-value,1", 8, 24.0, 2),
        )?;
        super::set_override(
            &mut b.work(&Extensions::default()),
            &o("analog-value,1", 10, 19.0, 3),
        )
    })
    .expect("set");
    drop(s);
    let mut s = open(&path);
    let list = s
        .with_batch(|b| super::overrides(&mut b.work(&Extensions::default()), "ahu"))
        .expect("list");
    assert_eq!(
        list,
        [
            o("analog-value,1", 8, 24.0, 2),
            o("analog-value,1", 10, 19.0, 3)
        ]
    );
    let cleared = s
        .with_batch(|b| {
            Ok((
                super::clear_override(
                    &mut b.work(&Extensions::default()),
                    "ahu",
                    "analog-value,1",
                    8,
                )?,
                super::clear_override(
                    &mut b.work(&Extensions::default()),
                    "ahu",
                    "analog-value,1",
                    8,
                )?,
            ))
        })
        .expect("clear");
    assert_eq!(cleared, (true, false));
    assert!(
        s.with_batch(|b| super::overrides(&mut b.work(&Extensions::default()), "other"))
            .expect("list")
            .is_empty()
    );
}
