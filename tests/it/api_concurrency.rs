//! No double booking under concurrency, over HTTP: many requests for one
//! slot, spread over several server instances on one PostgreSQL (and one
//! instance on the embedded store), book it exactly once; concurrent
//! bookings of different slots of one practitioner-day all succeed.
use std::collections::BTreeMap;

use chrono::Duration;
use futures::future::join_all;
use serde_json::{json, Value};

use crate::server::*;

const RACERS: usize = 200;
const NEIGHBOURS: usize = 50;

/// Instances sharing the deployment, with room for the load.
async fn start_instances(deployment: &Deployment, n: usize) -> Vec<TestServer> {
    let options = ServerOptions {
        pool_size: 16,
        ..Default::default()
    };
    join_all((0..n).map(|_| deployment.start_with(options.clone()))).await
}

/// Sends every request at once, the i-th to instance `i % n`; returns the responses.
async fn all_at_once(servers: &[TestServer], key: &str, inputs: Vec<Value>) -> Vec<Value> {
    join_all(
        inputs
            .into_iter()
            .enumerate()
            .map(|(i, input)| servers[i % servers.len()].gql(key, BOOK, json!({"input": input}))),
    )
    .await
}

/// How many responses had each outcome: `ok` or the error code.
fn outcomes(responses: &[Value]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for r in responses {
        let outcome = match r.get("errors") {
            None => "ok".to_owned(),
            Some(_) => error_code(r).unwrap_or("no code").to_owned(),
        };
        *counts.entry(outcome).or_default() += 1;
    }
    counts
}

async fn one_slot_is_booked_exactly_once(deployment: Deployment, instances: usize) {
    let servers = start_instances(&deployment, instances).await;
    let h = set_up_hospital(&deployment, &servers[0], "Contested Hospital").await;
    let staff = deployment.create_api_key(&h.tenant, "staff").await;
    let day = days_ahead(3);
    let slot = local(day, 10, 0);
    // Every instance knows the key and the slot before the race starts.
    for s in &servers {
        let free = slot_starts(s, &staff, &h.practitioner, &h.checkup, day, day).await;
        assert!(free.contains(&slot));
    }

    let inputs = (0..RACERS)
        .map(|i| book_input(&h.practitioner, &h.checkup, slot, &format!("HIS-{i}")))
        .collect();
    let responses = all_at_once(&servers, &staff, inputs).await;
    let counts = outcomes(&responses);
    assert_eq!(
        counts,
        BTreeMap::from([("ok".to_owned(), 1), ("SLOT_TAKEN".to_owned(), RACERS - 1)]),
        "exactly one booking wins, every other is told the slot is taken"
    );
    let winner = responses
        .iter()
        .find(|r| r.get("errors").is_none())
        .map(|r| {
            r["data"]["bookAppointment"]["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .unwrap();

    // The store itself holds one booking and one hold.
    assert_eq!(
        deployment
            .count_events(&h.tenant, "AppointmentBooked")
            .await,
        1
    );
    assert_eq!(deployment.count_events(&h.tenant, "SlotHeld").await, 1);
    assert_eq!(
        deployment.booked_appointment_ids(&h.tenant).await,
        std::slice::from_ref(&winner)
    );
    for s in &servers {
        let free = slot_starts(s, &staff, &h.practitioner, &h.checkup, day, day).await;
        assert!(!free.contains(&slot), "an instance still offers the slot");
        let a = s
            .gql_ok(
                &staff,
                "query($id: ID!) { appointment(id: $id) { start status } }",
                json!({"id": winner}),
            )
            .await;
        assert_eq!(
            a["appointment"],
            json!({"start": iso(slot), "status": "BOOKED"})
        );
    }
}

async fn different_slots_of_one_day_all_get_booked(deployment: Deployment, instances: usize) {
    let servers = start_instances(&deployment, instances).await;
    let h = set_up_hospital(&deployment, &servers[0], "Crowded Hospital").await;
    let staff = deployment.create_api_key(&h.tenant, "staff").await;
    let day = days_ahead(4);
    for s in &servers {
        slot_starts(s, &staff, &h.practitioner, &h.checkup, day, day).await;
    }
    // 08:00, 08:15, … 20:15: every booking appends to the same practitioner-day stream.
    let slots: Vec<_> = (0..NEIGHBOURS as i64)
        .map(|i| local(day, 8, 0) + Duration::minutes(15 * i))
        .collect();
    let inputs = slots
        .iter()
        .enumerate()
        .map(|(i, t)| book_input(&h.practitioner, &h.checkup, *t, &format!("HIS-{i}")))
        .collect();
    let responses = all_at_once(&servers, &staff, inputs).await;
    let failed: Vec<&Value> = responses
        .iter()
        .filter(|r| r.get("errors").is_some())
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {NEIGHBOURS} bookings of free slots failed ({:?}); first: {}",
        failed.len(),
        outcomes(&responses),
        failed[0]
    );
    assert_eq!(
        deployment
            .count_events(&h.tenant, "AppointmentBooked")
            .await,
        NEIGHBOURS as i64
    );
    assert_eq!(
        deployment.count_events(&h.tenant, "SlotHeld").await,
        NEIGHBOURS as i64
    );
    let free = slot_starts(&servers[0], &staff, &h.practitioner, &h.checkup, day, day).await;
    for t in &slots {
        assert!(!free.contains(t), "{t} is booked but still offered");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_racing_bookings_on_three_postgresql_instances_book_one_slot_exactly_once() {
    one_slot_is_booked_exactly_once(Deployment::postgres().await, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_racing_bookings_on_the_embedded_store_book_one_slot_exactly_once() {
    one_slot_is_booked_exactly_once(Deployment::embedded(), 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_bookings_of_one_day_on_three_postgresql_instances_all_succeed() {
    different_slots_of_one_day_all_get_booked(Deployment::postgres().await, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_bookings_of_one_day_on_the_embedded_store_all_succeed() {
    different_slots_of_one_day_all_get_booked(Deployment::embedded(), 1).await;
}
