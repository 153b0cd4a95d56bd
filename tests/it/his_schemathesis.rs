//! schemathesis, a stock OpenAPI client and fuzzer, against the served
//! `/his/v1/openapi.json` and the real server: every operation with data
//! the document allows (must not be refused as malformed), data it forbids
//! (must be refused), without credentials (must answer 401), without its
//! required headers, with methods the path does not take (405), and every
//! answer checked against the status codes, headers and bodies the document
//! declares. Any failure fails the test, so the document and the server
//! cannot drift apart again. The only refusals of schema-valid requests it
//! accepts are the rules JSON Schema cannot state, listed by code and field
//! in `his_schemathesis_hooks.py`.
//!
//! schemathesis is a Python program: `scripts/test` installs a pinned version
//! into a cached virtualenv and names it in `BUKTOR_TEST_SCHEMATHESIS`. Without that
//! variable the test says so and passes, except under CI, where it fails.
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Instant;

use crate::server::*;

/// Examples per operation and phase: enough to reach every field's limits and
/// every declared answer, small enough for about a minute on two cores.
const MAX_EXAMPLES: &str = "40";
/// Fixed so that a failure in CI reproduces on a developer's machine.
const SEED: &str = "17";

fn schemathesis() -> Option<PathBuf> {
    match std::env::var_os("BUKTOR_TEST_SCHEMATHESIS") {
        Some(path) => Some(PathBuf::from(path)),
        None if std::env::var_os("CI").is_some() => {
            panic!("BUKTOR_TEST_SCHEMATHESIS is not set: run the suite through scripts/test")
        }
        None => None,
    }
}

#[tokio::test]
async fn his_api_passes_schemathesis_against_its_served_document() {
    let Some(st) = schemathesis() else {
        eprintln!("skipped: BUKTOR_TEST_SCHEMATHESIS is not set (scripts/test sets it)");
        return;
    };
    let deployment = Deployment::embedded();
    let server = deployment.start().await;
    let tenant = deployment.create_tenant("Schemathesis").await;
    let key = deployment.create_api_key(&tenant, "his-system").await;
    let workdir = tempfile::tempdir().unwrap();

    // The refusals of schema-valid requests that JSON Schema cannot prevent
    // (rules between fields, booking rules) are accepted there, by code and field.
    let hooks = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/it/his_schemathesis_hooks.py"
    );

    let started = Instant::now();
    let output = tokio::process::Command::new(&st)
        .current_dir(workdir.path())
        .env("SCHEMATHESIS_HOOKS", hooks)
        .args([
            "run",
            &format!("{}/his/v1/openapi.json", server.url),
            "--header",
            &format!("Authorization: Bearer {key}"),
            "--max-examples",
            MAX_EXAMPLES,
            "--seed",
            SEED,
            "--workers",
            "2",
            "--generation-database",
            "none",
            "--no-color",
            "--output-truncate",
            "false",
        ])
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", st.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The summary (test cases run, failures) goes to the test's output,
    // for the record even when it passes.
    eprintln!(
        "schemathesis finished in {:.0?} with {}:\n{stdout}{stderr}",
        started.elapsed(),
        output.status
    );
    assert!(
        output.status.success(),
        "schemathesis found failures (see above); the server's output:\n{}",
        server.output()
    );
    assert!(
        !server.output().contains("panicked"),
        "the server panicked:\n{}",
        server.output()
    );
}
