//! The wrappers with real panics, on a fast policy (the back-off delays are `policy`'s table).

use super::*;
use std::sync::atomic::AtomicU32;
use std::sync::Mutex;
use std::time::Duration;

const FAST: Policy = Policy {
    initial: Duration::from_millis(1),
    cap: Duration::from_millis(4),
    burst: 3,
    window: Duration::from_secs(600),
};

/// A supervisor whose hooks record what they are told.
type Seen = Arc<Mutex<Vec<Incident>>>;

fn recording(policy: Policy) -> (Supervisor, Seen, Seen) {
    let (reported, gave_up) = (Arc::new(Mutex::new(vec![])), Arc::new(Mutex::new(vec![])));
    let (r, g) = (reported.clone(), gave_up.clone());
    let sup = Supervisor::new(
        policy,
        Arc::new(move |i: &Incident| r.lock().unwrap().push(i.clone())),
        Arc::new(move |i: &Incident| g.lock().unwrap().push(i.clone())),
    );
    (sup, reported, gave_up)
}

fn messages(v: &Mutex<Vec<Incident>>) -> Vec<(String, Decision)> {
    v.lock()
        .unwrap()
        .iter()
        .map(|i| (i.message.clone(), i.decision))
        .collect()
}

#[tokio::test]
async fn a_panicking_task_is_reported_and_restarted_until_a_run_ends_well() {
    let (sup, reported, gave_up) = recording(FAST);
    let runs = Arc::new(AtomicU32::new(0));
    let r = runs.clone();
    let h = task(&sup, Kind::Worker, "default/web", move || {
        let n = r.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            if n <= 2 {
                panic!("run {n} broke");
            }
        }
    });
    h.await.unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    assert_eq!(
        messages(&reported),
        vec![
            (
                "run 1 broke".into(),
                Decision::Restart {
                    after: FAST.initial
                }
            ),
            (
                "run 2 broke".into(),
                Decision::Restart {
                    after: FAST.initial * 2
                }
            ),
        ]
    );
    let first = reported.lock().unwrap()[0].clone();
    assert_eq!(first.reason(), "PodWorkerPanicked");
    assert_eq!(
        first.describe(),
        "pod worker default/web panicked: run 1 broke; restarting it in 1ms"
    );
    assert!(gave_up.lock().unwrap().is_empty());
    assert!(sup.all_up(), "restarted: up again");
}

#[tokio::test]
async fn a_task_that_keeps_panicking_makes_the_supervisor_give_up_and_stays_down() {
    let (sup, reported, gave_up) = recording(FAST);
    let h = task(&sup, Kind::Api, "", || async {
        panic!("always {}", "broken");
    });
    h.await.unwrap();
    // burst 3: three restarts, the fourth panic gives up.
    assert_eq!(reported.lock().unwrap().len(), 4);
    assert_eq!(
        messages(&gave_up),
        vec![("always broken".into(), Decision::GiveUp)]
    );
    assert_eq!(gave_up.lock().unwrap()[0].reason(), "RestartLimitReached");
    assert_eq!(sup.down(), 1, "a task given up on stays down: no watchdog");
}

#[tokio::test]
async fn a_task_waiting_for_its_restart_counts_as_down() {
    let slow = Policy {
        initial: Duration::from_secs(3600),
        ..FAST
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let sup = Supervisor::new(
        slow,
        Arc::new(move |i: &Incident| {
            let _ = tx.send(i.kind);
        }),
        Arc::new(|_: &Incident| {}),
    );
    assert!(sup.all_up());
    let h = task(&sup, Kind::Reporter, "", || async { panic!("once") });
    // The report comes after the task is counted down.
    let kind = tokio::task::spawn_blocking(move || rx.recv().unwrap())
        .await
        .unwrap();
    assert_eq!(kind, Kind::Reporter);
    assert!(!sup.all_up());
    h.abort();
}

#[tokio::test]
async fn a_task_that_ends_or_is_cancelled_is_not_restarted() {
    let (sup, reported, _) = recording(FAST);
    task(&sup, Kind::DevicePlugin, "r", || async {})
        .await
        .unwrap();
    let h = task(&sup, Kind::DevicePlugin, "r", || {
        std::future::pending::<()>()
    });
    h.abort();
    assert!(h.await.unwrap_err().is_cancelled());
    assert!(reported.lock().unwrap().is_empty());
    assert!(sup.all_up());
}

#[tokio::test]
async fn aborting_a_supervised_task_aborts_its_run() {
    // The run holds a sender; its receiver sees the channel close only once the run is dropped.
    let (sup, _, _) = recording(FAST);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let mut tx = Some(tx);
    let h = task(&sup, Kind::Session, "", move || {
        let tx = tx.take();
        async move {
            if let Some(tx) = &tx {
                tx.send(()).await.unwrap();
            }
            std::future::pending::<()>().await
        }
    });
    assert_eq!(rx.recv().await, Some(()), "the run started");
    h.abort();
    assert!(h.await.unwrap_err().is_cancelled());
    assert_eq!(
        rx.recv().await,
        None,
        "the run was dropped with its supervisor"
    );
}

#[test]
fn a_panicking_thread_is_reported_and_restarted() {
    let (sup, reported, gave_up) = recording(FAST);
    let mut runs = 0;
    let h = thread(&sup, Kind::Monitor, "test-monitor", move || {
        runs += 1;
        if runs == 1 {
            panic!("monitor broke");
        }
    })
    .unwrap();
    h.join().unwrap();
    assert_eq!(
        messages(&reported),
        vec![(
            "monitor broke".into(),
            Decision::Restart {
                after: FAST.initial
            }
        )]
    );
    assert_eq!(
        reported.lock().unwrap()[0].describe(),
        "eviction monitor panicked: monitor broke; restarting it in 1ms"
    );
    assert!(gave_up.lock().unwrap().is_empty());
    assert!(sup.all_up());
}

#[test]
fn a_thread_that_keeps_panicking_gives_up() {
    let (sup, _, gave_up) = recording(FAST);
    thread(&sup, Kind::Monitor, "test-monitor", || panic!("again"))
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(messages(&gave_up), vec![("again".into(), Decision::GiveUp)]);
}

#[tokio::test]
async fn joined_carries_a_panic_of_a_task_spawned_elsewhere() {
    let (sup, reported, _) = recording(FAST);
    let first = Arc::new(AtomicU32::new(0));
    task(&sup, Kind::Reporter, "", move || {
        let f = first.clone();
        joined(tokio::spawn(async move {
            if f.fetch_add(1, Ordering::SeqCst) == 0 {
                panic!("reporter broke");
            }
        }))
    })
    .await
    .unwrap();
    assert_eq!(
        messages(&reported),
        vec![(
            "reporter broke".into(),
            Decision::Restart {
                after: FAST.initial
            }
        )]
    );
}

#[tokio::test]
async fn catch_returns_a_panic_and_drops_the_future() {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let r = catch(async move {
        let _held = tx;
        tokio::task::yield_now().await;
        panic!("caught");
    })
    .await;
    assert_eq!(panic_message(&*r.unwrap_err()), "caught");
    assert_eq!(rx.recv().await, None, "the panicked future is dropped");
    assert_eq!(catch(async { 7 }).await.unwrap(), 7);
}
