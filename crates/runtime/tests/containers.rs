//! Long-lived containers through the library: records, the supervisor,
//! logs and restart with the same upper directory.

mod common;

use std::collections::BTreeMap;

use common::{Fixture, Kind, sh};
use kiln_runtime::container::logs::read_entries;
use kiln_runtime::container::{
    Attach, ContainerRecord, Containers, NewContainer, State, Status, supervise,
};
use kiln_runtime::{Network, Resources};

both_runtimes!(
    supervised_run_logs_and_restarts_with_its_changes,
    missing_command_is_127,
);

fn record(lowers: Vec<std::path::PathBuf>, cmd: Vec<String>) -> ContainerRecord {
    ContainerRecord {
        id: String::new(),
        name: String::new(),
        image: "busybox".into(),
        image_id: "sha256:00".into(),
        created: chrono::Utc::now(),
        lowers,
        entrypoint: vec![],
        cmd,
        env: vec!["A=1".into()],
        working_dir: "/".into(),
        user: String::new(),
        hostname: "box".into(),
        network: Network::None,
        ports: vec![],
        mounts: vec![],
        read_only: false,
        resources: Resources::default(),
        auto_remove: false,
        tty: false,
        open_stdin: false,
        stop_signal: String::new(),
        labels: BTreeMap::new(),
        runtime: String::new(),
        state: State::default(),
    }
}

async fn supervised_run_logs_and_restarts_with_its_changes(kind: Kind) {
    require_containers!(kind);
    let fx = Fixture::new(kind);
    let base = fx.busybox_layer();
    let containers = Containers::open(&fx.dir.path().join("store"))
        .unwrap()
        .with_runtime(kind.runtime());
    let script = "echo $A; cat /count 2>/dev/null; echo x >> /count; echo oops >&2; exit 4";
    let c = containers
        .create(NewContainer {
            name: Some("counter".into()),
            record: record(vec![base], sh(script)),
        })
        .unwrap();
    let outcome = supervise(&containers, &c.id, Attach::default())
        .await
        .unwrap();
    assert_eq!(outcome.exit_code, 4);
    let r = containers.find("counter").unwrap();
    assert_eq!(r.state.status, Status::Exited);
    assert_eq!(r.state.exit_code, Some(4));
    assert!(r.state.started_at.is_some());

    // Started again: the upper directory is kept.
    supervise(&containers, &c.id, Attach::default())
        .await
        .unwrap();
    let logs: Vec<(bool, String)> = read_entries(&containers.log_path(&c.id))
        .unwrap()
        .into_iter()
        .map(|e| (e.is_stderr(), e.log))
        .collect();
    let out: Vec<&str> = logs
        .iter()
        .filter(|(err, _)| !err)
        .map(|(_, l)| l.as_str())
        .collect();
    assert_eq!(out, ["1\n", "1\n", "x\n"]);
    assert_eq!(logs.iter().filter(|(err, _)| *err).count(), 2);
    containers.remove(&c.id, true).unwrap();
    assert!(containers.list().unwrap().is_empty());
}

async fn missing_command_is_127(kind: Kind) {
    require_containers!(kind);
    let fx = Fixture::new(kind);
    let base = fx.busybox_layer();
    let containers = Containers::open(&fx.dir.path().join("store"))
        .unwrap()
        .with_runtime(kind.runtime());
    let c = containers
        .create(NewContainer {
            name: None,
            record: record(vec![base], vec!["foo".into()]),
        })
        .unwrap();
    let outcome = supervise(&containers, &c.id, Attach::default())
        .await
        .unwrap();
    assert_eq!(outcome.exit_code, 127);
    assert_eq!(
        outcome.start_error.as_deref(),
        Some("exec: \"foo\": executable file not found in $PATH")
    );
    assert_eq!(
        containers.load(&c.id).unwrap().state.status,
        Status::Created
    );
}
