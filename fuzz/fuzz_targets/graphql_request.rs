//! POST /graphql bodies, through the code the route runs once the caller is
//! authenticated (`Endpoint::answer_http_body`): the body measured and read
//! within the limits, then the real schema (introspection routing,
//! validation, depth and complexity limits, resolvers) over a demo hospital
//! in an embedded store, as its admin. An answer coded `INTERNAL` to input
//! that is only bad is a server bug, and fails the target.
#![no_main]

use std::sync::mpsc;
use std::sync::OnceLock;

use buktor::config::Config;
use buktor::graphql::RequestInfo;
use buktor::http::AppState;
use libfuzzer_sys::fuzz_target;

/// actix-web runs handlers on threads with Rust's default 2 MiB stack; the
/// requests run on a thread of that size, so that a recursion too deep for
/// a worker is found here too (the fuzzer's own main thread has 8 MiB).
const WORKER_STACK: usize = 2 * 1024 * 1024;

type Job = (Vec<u8>, mpsc::SyncSender<()>);

fn worker() -> &'static mpsc::SyncSender<Job> {
    static WORKER: OnceLock<mpsc::SyncSender<Job>> = OnceLock::new();
    WORKER.get_or_init(|| {
        let (jobs, incoming) = mpsc::sync_channel::<Job>(0);
        std::thread::Builder::new()
            .name("graphql-worker".into())
            .stack_size(WORKER_STACK)
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime");
                runtime.block_on(serve(incoming));
            })
            .expect("the worker thread");
        jobs
    })
}

async fn serve(incoming: mpsc::Receiver<Job>) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = Config {
        data_dir: dir.path().to_owned(),
        ..Config::default()
    };
    let store = buktor::store::open(&config)
        .await
        .expect("the embedded store");
    let state = AppState::new(&config, store);
    let seeded = buktor::demo::seed(&state.scheduler)
        .await
        .expect("the demo hospital");
    let admin = state
        .auth
        .verify(&seeded.admin_key)
        .await
        .expect("the demo admin key");
    while let Ok((body, done)) = incoming.recv() {
        let info = RequestInfo {
            remote_addr: Some("127.0.0.1".into()),
            request_id: uuid::Uuid::now_v7(),
            source: None,
        };
        if let Ok(response) = state
            .schema
            .answer_http_body(&body, admin.clone(), info)
            .await
        {
            for error in &response.errors {
                let code = error
                    .extensions
                    .as_ref()
                    .and_then(|e| e.get("code"))
                    .map(|c| c.to_string());
                assert!(
                    code.as_deref() != Some("\"INTERNAL\""),
                    "a bad request answered INTERNAL: {error:?}"
                );
            }
        }
        let _ = done.send(());
    }
}

fuzz_target!(|data: &[u8]| {
    let (done, finished) = mpsc::sync_channel(0);
    worker()
        .send((data.to_vec(), done))
        .expect("the worker is running");
    finished.recv().expect("the worker answered");
});
