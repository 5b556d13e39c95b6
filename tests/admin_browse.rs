//! The admin calls a dashboard browses with: pending entries a page at a time, dead letters filtered by function key
//! and reason a bounded page at a time, every matching dead letter's id, and the stream's entries-added counter.

mod common;

use std::time::Duration;

use common::{TestEnv, WAIT, wait_until};
use redcall::admin::{DeadLetterFilter, SCAN_LIMIT};
use redcall::{ErrorKind, HandlerError, RequestContext, ResponderSettings};
use tokio::sync::watch;

/// Writes `n` dead letters straight into the service's dead-letter stream, alternating function keys `a`/`b` and
/// reasons `unknown_function`/`max_deliveries_exceeded` (entry i has `a` when i is even, `unknown_function` when
/// i % 3 == 0). Returns their ids in order.
async fn write_dead_letters(env: &TestEnv, n: usize) -> Vec<String> {
    let mut con = env.redis().await;
    let key = env.admin().keys().dead_letters().to_owned();
    let mut ids = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for i in chunk {
            let func = if i % 2 == 0 { "a" } else { "b" };
            let reason = if i % 3 == 0 {
                "unknown_function"
            } else {
                "max_deliveries_exceeded"
            };
            pipe.cmd("XADD")
                .arg(&key)
                .arg("*")
                .arg("id")
                .arg(format!("req-{i}"))
                .arg("fn")
                .arg(func)
                .arg("reason")
                .arg(reason)
                .arg("error")
                .arg("boom");
        }
        let added: Vec<String> = pipe.query_async(&mut con).await.expect("XADD");
        ids.extend(added);
    }
    ids
}

#[tokio::test]
async fn filtered_dead_letters_page_through_every_match_once() {
    let env = TestEnv::new();
    let all = write_dead_letters(&env, 450).await;
    let admin = env.admin();
    let filter = DeadLetterFilter::new()
        .func_key("a")
        .reason("unknown_function");
    let expected: Vec<&String> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 2 == 0 && i % 3 == 0)
        .map(|(_, id)| id)
        .collect();

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..100 {
        let page = admin
            .dead_letters_matching(&filter, after.as_deref(), 20)
            .await
            .expect("page");
        assert!(page.entries.len() <= 20);
        for e in &page.entries {
            assert_eq!(e.func_key.as_deref(), Some("a"));
            assert_eq!(e.reason, "unknown_function");
        }
        seen.extend(page.entries.into_iter().map(|e| e.dead_id));
        match page.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let seen: Vec<&String> = seen.iter().collect();
    assert_eq!(seen, expected, "every match once, in stream order");

    let ids = admin
        .dead_letter_ids_matching(&filter)
        .await
        .expect("all ids");
    assert_eq!(ids.iter().collect::<Vec<_>>(), expected);
    let every = admin
        .dead_letter_ids_matching(&DeadLetterFilter::new())
        .await
        .expect("every id");
    assert_eq!(every, all, "the empty filter takes all");

    // A page that ends on the newest entry sends nowhere.
    let last = admin
        .dead_letters_matching(
            &DeadLetterFilter::new(),
            all.get(448).map(String::as_str),
            1,
        )
        .await
        .expect("last page");
    assert_eq!(last.entries.len(), 1);
    assert_eq!(last.next_after, None);

    let err = admin
        .dead_letters_matching(&filter, Some("nope"), 10)
        .await
        .expect_err("malformed after");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
}

#[tokio::test]
async fn a_filter_matching_nothing_reads_a_bounded_page() {
    let env = TestEnv::new();
    let extra = 50;
    let all = write_dead_letters(&env, SCAN_LIMIT as usize + extra).await;
    let admin = env.admin();
    let nothing = DeadLetterFilter::new().reason("no_such_reason");
    let first = admin
        .dead_letters_matching(&nothing, None, 10)
        .await
        .expect("first");
    assert!(first.entries.is_empty());
    assert_eq!(first.scanned, SCAN_LIMIT);
    let next = first.next_after.expect("stopped at the scan limit");
    assert_eq!(next, all[SCAN_LIMIT as usize - 1]);
    let second = admin
        .dead_letters_matching(&nothing, Some(&next), 10)
        .await
        .expect("second");
    assert!(second.entries.is_empty());
    assert_eq!(second.scanned, extra as u64);
    assert_eq!(second.next_after, None, "the end of the stream");
}

#[tokio::test]
async fn pending_entries_name_holder_idle_deliveries_and_request() {
    let env = TestEnv::new();
    let (release, released) = watch::channel(false);
    let responder = env
        .responder()
        .consumer("holder")
        .concurrency(3)
        .reaper(false)
        .handler("hold", move |_ctx: RequestContext, n: i64| {
            let mut released = released.clone();
            async move {
                released
                    .wait_for(|r| *r)
                    .await
                    .map_err(|e| HandlerError::retry(e.to_string()))?;
                Ok::<_, HandlerError>(n)
            }
        })
        .start()
        .await
        .expect("responder");
    let requester = env.requester();
    let mut sent = Vec::new();
    for i in 0..5 {
        let id = format!("held-{i}");
        let pending = requester
            .send(&id, "hold", &i, Duration::from_secs(60))
            .await
            .expect("send");
        sent.push((id, pending));
    }
    let admin = env.admin();
    let group = ResponderSettings::DEFAULT_GROUP;
    let held = wait_until(WAIT, || {
        let admin = admin.clone();
        async move {
            admin
                .pending_entries(group, None, 10)
                .await
                .is_ok_and(|p| p.len() == 3)
        }
    })
    .await;
    assert!(held, "three entries held");

    let first = admin
        .pending_entries(group, None, 2)
        .await
        .expect("first page");
    assert_eq!(first.len(), 2);
    let rest = admin
        .pending_entries(group, Some(&first[1].entry_id), 10)
        .await
        .expect("second page");
    assert_eq!(rest.len(), 1);
    let all: Vec<_> = first.iter().chain(&rest).collect();
    for (p, (id, _)) in all.iter().zip(&sent) {
        assert_eq!(p.consumer, "holder");
        assert_eq!(p.deliveries, 1);
        assert_eq!(p.request_id.as_deref(), Some(id.as_str()), "oldest first");
    }
    assert!(all.windows(2).all(|w| w[0].entry_id < w[1].entry_id));

    assert!(
        admin
            .pending_entries("no-such-group", None, 10)
            .await
            .expect("unknown group")
            .is_empty()
    );
    let err = admin
        .pending_entries(group, Some("x-1"), 10)
        .await
        .expect_err("malformed after");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");

    let _ = release.send(true);
    for (_, pending) in sent {
        pending.wait::<i64>().await.expect("answered");
    }
    responder.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn stats_count_entries_ever_added() {
    let env = TestEnv::new();
    let admin = env.admin();
    assert_eq!(admin.stats().await.expect("stats").entries_added, None);
    let requester = env.requester();
    for i in 0..4 {
        requester
            .send(&format!("added-{i}"), "echo", &i, Duration::from_secs(60))
            .await
            .expect("send");
    }
    env.server
        .cli(&["XTRIM", admin.keys().requests(), "MAXLEN", "1"]);
    let stats = admin.stats().await.expect("stats");
    assert_eq!(stats.stream_length, 1, "trimmed");
    assert_eq!(stats.entries_added, Some(4), "trimmed entries still count");
}

#[tokio::test]
async fn a_partitioned_services_dead_letters_page_across_partitions_with_repeated_ids() {
    let env = TestEnv::with_client(|b| b.partitions(3));
    let service = env.service().to_owned();
    let layout = redcall::protocol::Partitions::new("redcall", &service, 3);
    let mut con = env.redis().await;
    // The same ids in every partition (partitions that dead-letter in the same millisecond do that): 5 each,
    // function `a` for the even sequence numbers, and one more in partition 1 only.
    let mut pipe = redis::pipe();
    for (p, keys) in layout.all().iter().enumerate() {
        let extra = if p == 1 { 6 } else { 5 };
        for i in 1..=extra {
            pipe.cmd("XADD")
                .arg(keys.dead_letters())
                .arg(format!("1000-{i}"))
                .arg("id")
                .arg(format!("p{p}-r{i}"))
                .arg("fn")
                .arg(if i % 2 == 0 { "a" } else { "b" })
                .arg("reason")
                .arg("unknown_function")
                .ignore();
        }
    }
    let _: () = pipe.query_async(&mut con).await.expect("XADD");
    let admin = env.admin();
    for (filter, want) in [
        (DeadLetterFilter::new(), 16),
        (DeadLetterFilter::new().func_key("a"), 7),
    ] {
        for limit in [1, 2, 4, 100] {
            let mut seen = Vec::new();
            let mut after: Option<String> = None;
            for page in 0.. {
                assert!(page < 40, "limit {limit}: too many pages");
                let got = admin
                    .dead_letters_matching(&filter, after.as_deref(), limit)
                    .await
                    .expect("page");
                // At most `limit` and the other partitions' entries of the last id.
                assert!(got.entries.len() <= limit + 2, "limit {limit}: {got:?}");
                seen.extend(
                    got.entries
                        .iter()
                        .map(|e| (e.dead_id.clone(), e.partition, e.request_id.clone())),
                );
                match got.next_after {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            assert_eq!(seen.len(), want, "limit {limit}: {seen:?}");
            let mut distinct = seen.clone();
            distinct.sort();
            distinct.dedup();
            assert_eq!(distinct.len(), want, "limit {limit}: each once");
            let order: Vec<(u64, u64)> = seen
                .iter()
                .map(|(id, _, _)| {
                    let (ms, seq) = id.split_once('-').expect("an entry id");
                    (ms.parse().expect("ms"), seq.parse().expect("seq"))
                })
                .collect();
            assert!(order.is_sorted(), "oldest first: {seen:?}");
            for (_, partition, request) in &seen {
                let p = partition.expect("a partitioned service's dead letter names its partition");
                assert!(
                    request
                        .as_deref()
                        .is_some_and(|r| r.starts_with(&format!("p{p}-"))),
                    "{request:?} in partition {p}"
                );
            }
        }
    }
    // Every matching id of every partition, each once.
    let ids = admin
        .dead_letter_ids_matching(&DeadLetterFilter::new())
        .await
        .expect("ids");
    assert_eq!(ids.len(), 6, "{ids:?}");
    // The stats for polling never count per group, and agree with the full ones otherwise.
    let full = admin.stats().await.expect("stats");
    let summary = admin.stats_summary().await.expect("summary");
    assert_eq!(summary.dead_letters, 16);
    assert_eq!(summary.dead_letters, full.dead_letters);
    assert_eq!(summary.stream_length, full.stream_length);
}

/// On a service of several partitions, the pending entries of every partition's stream are listed (each naming its
/// partition), oldest first, and paging one at a time sees each exactly once.
#[tokio::test]
async fn pending_entries_cover_every_partition() {
    let env = TestEnv::with_client(|b| b.partitions(3));
    let (release, released) = watch::channel(false);
    let responder = env
        .responder()
        .consumer("holder")
        .concurrency(12)
        .reaper(false)
        .handler("hold", move |_ctx: RequestContext, n: i64| {
            let mut released = released.clone();
            async move {
                released
                    .wait_for(|r| *r)
                    .await
                    .map_err(|e| HandlerError::retry(e.to_string()))?;
                Ok::<_, HandlerError>(n)
            }
        })
        .start()
        .await
        .expect("responder");
    let requester = env.requester();
    let layout = env.client.partitioned_keys(env.service(), 3);
    let mut sent = Vec::new();
    for i in 0..9 {
        let id = format!("held-{i}");
        sent.push(
            requester
                .send(&id, "hold", &i, Duration::from_secs(60))
                .await
                .expect("send"),
        );
    }
    let partitions: std::collections::BTreeSet<usize> = (0..9)
        .map(|i| layout.index_of(&format!("held-{i}")))
        .collect();
    assert!(partitions.len() > 1, "the ids span partitions");
    let admin = env.admin();
    let group = ResponderSettings::DEFAULT_GROUP;
    let held = wait_until(WAIT, || {
        let admin = admin.clone();
        async move {
            admin
                .pending_entries(group, None, 100)
                .await
                .is_ok_and(|p| p.len() == 9)
        }
    })
    .await;
    assert!(held, "nine entries held, in every partition");
    let all = admin.pending_entries(group, None, 100).await.expect("all");
    for entry in &all {
        let id = entry.request_id.as_deref().expect("a request id");
        assert_eq!(entry.partition, Some(layout.index_of(id)), "{entry:?}");
    }
    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..20 {
        let page = admin
            .pending_entries(group, after.as_deref(), 1)
            .await
            .expect("page");
        let Some(last) = page.last() else { break };
        after = Some(last.entry_id.clone());
        paged.extend(page.into_iter().filter_map(|e| e.request_id));
    }
    paged.sort();
    let mut expected: Vec<String> = (0..9).map(|i| format!("held-{i}")).collect();
    expected.sort();
    assert_eq!(paged, expected, "each pending entry once");

    let _ = release.send(true);
    for pending in sent {
        let _: i64 = pending.wait().await.expect("released");
    }
    responder.shutdown().await.expect("shutdown");
}

/// `dead_letters` (what `redcall dlq list --after` pages with) on a service of several partitions whose dead-letter
/// ids repeat: paging one at a time sees every entry once.
#[tokio::test]
async fn dead_letters_page_through_repeated_ids_of_partitions() {
    let env = TestEnv::with_client(|b| b.partitions(3));
    let service = env.service().to_owned();
    let layout = redcall::protocol::Partitions::new("redcall", &service, 3);
    for (p, keys) in layout.all().iter().enumerate() {
        for i in 1..=2 {
            env.server.cli(&[
                "XADD",
                keys.dead_letters(),
                &format!("1000-{i}"),
                "id",
                &format!("p{p}-r{i}"),
                "fn",
                "f",
            ]);
        }
    }
    let admin = env.admin();
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..20 {
        let page = admin.dead_letters(after.as_deref(), 1).await.expect("page");
        let Some(last) = page.last() else { break };
        after = Some(last.dead_id.clone());
        seen.extend(page.into_iter().filter_map(|e| e.request_id));
    }
    seen.sort();
    assert_eq!(
        seen,
        ["p0-r1", "p0-r2", "p1-r1", "p1-r2", "p2-r1", "p2-r2"],
        "each dead letter once"
    );
}
