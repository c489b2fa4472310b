//! The runner against a scripted reconciler, on tokio's paused clock.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::controllers::feed::Feed;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use skiff_proto::objects::InformerEvent;
use tokio::time::Instant;

use super::metrics::ControllerMetrics;
use super::*;

type Script = HashMap<String, VecDeque<Result<Action, ()>>>;

#[derive(Default)]
struct Fake {
    /// What each reconcile of a key answers, in turn; then `done`.
    script: Mutex<Script>,
    /// Every reconcile: key, start.
    calls: Mutex<Vec<(String, Instant)>>,
    /// Reconciles running now, by key.
    running: Mutex<HashMap<String, usize>>,
    /// Most reconciles of one key seen running at once.
    most_at_once: AtomicUsize,
    /// How long a reconcile takes.
    takes: Duration,
    keys: Vec<String>,
}

impl Fake {
    fn calls_of(&self, key: &str) -> Vec<Instant> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, t)| *t)
            .collect()
    }
}

fn failure() -> ReconcileError {
    ReconcileError::Client(skiff_proto::ClientError::Rejected(tonic::Status::aborted(
        "scripted failure",
    )))
}

impl Reconciler for Arc<Fake> {
    type Key = String;
    const NAME: &'static str = "fake";

    async fn reconcile(&self, key: &String) -> Result<Action, ReconcileError> {
        self.calls
            .lock()
            .unwrap()
            .push((key.clone(), Instant::now()));
        let now_running = {
            let mut r = self.running.lock().unwrap();
            let n = r.entry(key.clone()).or_default();
            *n += 1;
            *n
        };
        self.most_at_once.fetch_max(now_running, Ordering::SeqCst);
        tokio::time::sleep(self.takes).await;
        *self.running.lock().unwrap().entry(key.clone()).or_default() -= 1;
        let answer = self
            .script
            .lock()
            .unwrap()
            .get_mut(key)
            .and_then(VecDeque::pop_front);
        match answer {
            None => Ok(Action::done()),
            Some(Ok(a)) => Ok(a),
            Some(Err(())) => Err(failure()),
        }
    }

    fn all_keys(&self) -> Vec<String> {
        self.keys.clone()
    }
}

fn runner(fake: &Arc<Fake>) -> Runner<Arc<Fake>> {
    let metrics = ControllerMetrics::default();
    Runner::new(
        fake.clone(),
        metrics.of("fake"),
        RunnerSettings {
            workers: 4,
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(1),
            own_writes_wait: Duration::from_secs(5),
            resync: None,
        },
    )
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_changes_to_one_key_is_reconciled_once_more_not_once_per_change() {
    let fake = Arc::new(Fake {
        takes: Duration::from_millis(50),
        ..Default::default()
    });
    let r = runner(&fake);
    let handle = r.handle();
    let task = tokio::spawn(r.run());
    handle.add("a".to_string());
    tokio::time::sleep(Duration::from_millis(10)).await;
    // While "a" is being reconciled, it changes 100 times.
    for _ in 0..100 {
        handle.add("a".to_string());
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        fake.calls_of("a").len(),
        2,
        "once, then once more for the changes"
    );
    assert_eq!(fake.most_at_once.load(Ordering::SeqCst), 1);
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn one_key_is_never_reconciled_twice_at_once_while_others_run_alongside() {
    let fake = Arc::new(Fake {
        takes: Duration::from_millis(100),
        ..Default::default()
    });
    let r = runner(&fake);
    let handle = r.handle();
    let task = tokio::spawn(r.run());
    for round in 0..20 {
        for k in ["a", "b", "c"] {
            handle.add(k.to_string());
        }
        tokio::time::sleep(Duration::from_millis(7 * (round % 3 + 1))).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(fake.most_at_once.load(Ordering::SeqCst), 1);
    // The three keys did run side by side: the first calls of each started together.
    let firsts: Vec<Instant> = ["a", "b", "c"]
        .iter()
        .map(|k| fake.calls_of(k)[0])
        .collect();
    assert!(firsts.iter().all(|t| *t == firsts[0]), "{firsts:?}");
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn a_failing_key_backs_off_exponentially_and_a_success_resets_it() {
    let fake = Arc::new(Fake::default());
    fake.script.lock().unwrap().insert(
        "a".into(),
        VecDeque::from([Err(()), Err(()), Err(()), Ok(Action::done()), Err(())]),
    );
    let r = runner(&fake);
    let handle = r.handle();
    let task = tokio::spawn(r.run());
    handle.add("a".to_string());
    tokio::time::sleep(Duration::from_secs(5)).await;
    let calls = fake.calls_of("a");
    assert_eq!(calls.len(), 4, "three failures, then a success: {calls:?}");
    let gaps: Vec<u128> = calls
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis())
        .collect();
    assert_eq!(gaps, vec![100, 200, 400]);
    // A later failure starts from the base again.
    handle.add("a".to_string());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let calls = fake.calls_of("a");
    assert_eq!(calls.len(), 6);
    assert_eq!((calls[5] - calls[4]).as_millis(), 100);
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn a_reconcile_that_asks_is_requeued_after_its_delay() {
    let fake = Arc::new(Fake::default());
    fake.script.lock().unwrap().insert(
        "a".into(),
        VecDeque::from([Ok(Action::requeue_after(Duration::from_secs(3)))]),
    );
    let r = runner(&fake);
    let handle = r.handle();
    let task = tokio::spawn(r.run());
    let start = Instant::now();
    handle.add("a".to_string());
    tokio::time::sleep(Duration::from_secs(10)).await;
    let calls = fake.calls_of("a");
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!((calls[1] - start).as_secs(), 3);
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn every_key_is_reconciled_at_start_and_after_a_relist() {
    let fake = Arc::new(Fake {
        keys: vec!["x".into(), "y".into()],
        ..Default::default()
    });
    let tx = Feed::<InformerEvent<Pod>>::new(16);
    let rx = tx.subscribe();
    let r = runner(&fake).watches(rx, |_| Vec::new());
    let task = tokio::spawn(r.run());
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(fake.calls_of("x").len(), 1);
    tx.send(InformerEvent::Synced);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(fake.calls_of("x").len(), 2);
    assert_eq!(fake.calls_of("y").len(), 2);
    task.abort();
}

fn pod(name: &str, owner: Option<&str>) -> Arc<Pod> {
    Arc::new(Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            owner_references: owner.map(|o| {
                vec![OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: "ReplicaSet".into(),
                    name: o.into(),
                    uid: format!("uid-{o}"),
                    controller: Some(true),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        },
        ..Default::default()
    })
}

fn owner_key(p: &Pod) -> Vec<String> {
    p.metadata
        .owner_references
        .iter()
        .flatten()
        .filter(|o| o.controller == Some(true))
        .map(|o| format!("default/{}", o.name))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn an_owned_objects_change_reaches_its_owner_and_its_former_owner() {
    let fake = Arc::new(Fake::default());
    let tx = Feed::<InformerEvent<Pod>>::new(16);
    let rx = tx.subscribe();
    let r = runner(&fake).watches(rx, owner_key);
    let task = tokio::spawn(r.run());
    tokio::time::sleep(Duration::from_millis(10)).await;
    tx.send(InformerEvent::Applied {
        object: pod("web-1", Some("web")),
        previous: None,
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(fake.calls_of("default/web").len(), 1);
    // Released by "web", taken by "api": both owners look again.
    tx.send(InformerEvent::Applied {
        object: pod("web-1", Some("api")),
        previous: Some(pod("web-1", Some("web"))),
    });
    tx.send(InformerEvent::Deleted(pod("orphan", None)));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(fake.calls_of("default/web").len(), 2);
    assert_eq!(fake.calls_of("default/api").len(), 1);
    assert_eq!(fake.calls.lock().unwrap().len(), 3);
    task.abort();
}

#[derive(Default)]
struct Writer {
    /// The revision the caches show.
    seen: Mutex<u64>,
    /// Revisions at which each reconcile found the caches.
    saw: Mutex<Vec<u64>>,
    next_revision: AtomicUsize,
}

impl Reconciler for Arc<Writer> {
    type Key = String;
    const NAME: &'static str = "writer";

    async fn reconcile(&self, _key: &String) -> Result<Action, ReconcileError> {
        self.saw.lock().unwrap().push(*self.seen.lock().unwrap());
        let rev = self.next_revision.fetch_add(10, Ordering::SeqCst) as u64 + 10;
        Ok(Action::done().wrote(rev))
    }

    fn all_keys(&self) -> Vec<String> {
        Vec::new()
    }

    async fn caught_up(&self, revision: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while *self.seen.lock().unwrap() < revision && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_key_is_reconciled_again_only_once_the_caches_show_its_last_write() {
    let writer = Arc::new(Writer::default());
    let r = Runner::new(
        writer.clone(),
        ControllerMetrics::default().of("writer"),
        RunnerSettings {
            resync: None,
            ..Default::default()
        },
    );
    let handle = r.handle();
    let task = tokio::spawn(r.run());
    handle.add("a".into());
    tokio::time::sleep(Duration::from_millis(10)).await;
    // It wrote at revision 10; an event (its own pod, say) queues it before the cache has it.
    handle.add("a".into());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(*writer.saw.lock().unwrap(), vec![0], "held back");
    *writer.seen.lock().unwrap() = 10;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(*writer.saw.lock().unwrap(), vec![0, 10]);
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn queue_depth_outcomes_and_latency_are_counted() {
    let fake = Arc::new(Fake {
        takes: Duration::from_millis(20),
        ..Default::default()
    });
    fake.script
        .lock()
        .unwrap()
        .insert("bad".into(), VecDeque::from([Err(())]));
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = ControllerMetrics::register(&mut registry);
    let r = Runner::new(
        fake.clone(),
        metrics.of("fake"),
        RunnerSettings {
            resync: None,
            ..Default::default()
        },
    );
    let handle = r.handle();
    for k in ["a", "b", "bad"] {
        handle.add(k.to_string());
    }
    let figures = metrics.of("fake");
    assert_eq!(figures.depth.get(), 3);
    let task = tokio::spawn(r.run());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(figures.depth.get(), 0);
    assert_eq!(figures.successes.get(), 3, "a, b, and bad's retry");
    assert_eq!(figures.errors.get(), 1);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    let counts: BTreeMap<&str, &str> = text.lines().filter_map(|l| l.split_once(' ')).collect();
    assert_eq!(
        counts.get("skiff_controller_reconcile_duration_seconds_count{controller=\"fake\"}"),
        Some(&"4")
    );
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn every_key_is_reconciled_again_after_the_resync_period() {
    let fake = Arc::new(Fake {
        keys: vec!["x".into()],
        ..Default::default()
    });
    let r = Runner::new(
        fake.clone(),
        ControllerMetrics::default().of("fake"),
        RunnerSettings {
            resync: Some(Duration::from_secs(600)),
            ..Default::default()
        },
    );
    let task = tokio::spawn(r.run());
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(fake.calls_of("x").len(), 1, "once at start");
    tokio::time::sleep(Duration::from_secs(700)).await;
    assert_eq!(
        fake.calls_of("x").len(),
        2,
        "and once after a period, 540-660 s"
    );
    task.abort();
}
