//! Sending a stream of requests whose answers are journaled: at most `width` at a time,
//! each finished record appended to the journal as it arrives, a progress bar (requests/s,
//! ETA, in flight, tokens/s, failures by class) with heartbeat log lines for batch jobs.
//! A journal that cannot be written stops the batch: no request is paid for unrecorded;
//! so does the client's circuit breaker (`llm::breaker`) when an endpoint cannot succeed.
//! One request of such a batch, with re-asks for bad answers, is `LlmSession::ask`
//! (`llm::stage`).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use futures_util::{Stream, StreamExt};

use super::FailureClass;
use super::LlmClient;
use crate::journal::{Journal, Record};
use crate::progress::{Heartbeat, count_bar, log_line};

/// What a batch did.
#[derive(Clone, Debug, Default)]
pub struct BatchOutcome {
    pub sent: u64,
    pub failures_by_class: BTreeMap<String, u64>,
}

/// Counts shown on the bar.
#[derive(Default)]
struct Tally {
    sent: u64,
    tokens: u64,
    failures: BTreeMap<String, u64>,
    /// Why the batch stopped sending: the journal could not be written, or the breaker tripped.
    stop: Option<anyhow::Error>,
}

/// The requests a batch is part of: all of the stage's, and those the journal already
/// answered (which may grow while a reader finds them).
#[derive(Clone, Copy)]
pub struct Counts<'a> {
    pub total: u64,
    pub already: &'a AtomicU64,
}

/// How often, and with what message, an answer that does not parse is asked again.
#[derive(Clone, Copy)]
pub struct Reask<'a> {
    pub times: u32,
    pub text: &'a str,
}

/// Sends every job through `ask` (as many at a time as the client's endpoints allow) and
/// journals its record, until the client's breaker trips or the journal fails. `total` and `already` size the progress bar: all requests of
/// the stage, and those of them the journal already answered. `already` may grow while
/// jobs are sent (a reader that finds the answered requests as it goes counts them
/// there), so that the bar counts only this stage's requests even when the journal holds
/// others (another input, an earlier selection).
pub async fn send_journaled<J, F, Fut>(
    label: &str,
    jobs: impl Stream<Item = J>,
    client: &LlmClient,
    Counts { total, already }: Counts<'_>,
    journal: &Journal,
    ask: F,
) -> Result<BatchOutcome>
where
    F: Fn(J) -> Fut,
    Fut: Future<Output = Record>,
{
    let bar = count_bar(total, label);
    let position = |sent: u64| (already.load(Ordering::Relaxed) + sent).min(total);
    bar.set_position(position(0));
    let heartbeat = Heartbeat::new(Duration::from_secs(30));
    let started = Instant::now();
    let tally = Mutex::new(Tally::default());
    let width = client.settings.endpoints.len() * client.settings.max_concurrency;
    let stopped = || tally.lock().expect("tally").stop.is_some() || client.tripped().is_some();
    jobs.take_while(|_| futures_util::future::ready(!stopped()))
        .map(ask)
        .buffer_unordered(width.max(1))
        .for_each(|record| {
            let mut t = tally.lock().expect("tally");
            if record.failure.as_deref() == Some(FailureClass::Stopped.name()) {
                return futures_util::future::ready(()); // never sent: nothing to journal
            }
            if let Some(f) = &record.failure {
                *t.failures.entry(f.clone()).or_default() += 1;
            }
            if let Err(e) = journal.append(&record) {
                let e = e.context("the request journal could not be written; the stage stopped (answers already journaled are kept)");
                t.stop.get_or_insert(e);
                client.stop_sending();
            }
            t.sent += 1;
            t.tokens += record.prompt_tokens + record.completion_tokens;
            let tokens_per_s = t.tokens as f64 / started.elapsed().as_secs_f64().max(1e-3);
            let failed: Vec<String> = t.failures.iter().map(|(k, v)| format!("{k} {v}")).collect();
            bar.set_position(position(t.sent));
            bar.set_message(format!(
                "{label} ({} in flight, {tokens_per_s:.0} tokens/s{}{})",
                client.in_flight(),
                if failed.is_empty() { "" } else { "; failed: " },
                failed.join(", ")
            ));
            if heartbeat.due() {
                log_line(&bar, &format!("{label} requests"));
            }
            futures_util::future::ready(())
        })
        .await;
    bar.finish_and_clear();
    let mut t = tally.into_inner().expect("tally");
    if let Some(message) = client.tripped() {
        t.stop.get_or_insert(anyhow::anyhow!("{label}: {message}"));
    }
    let synced = journal.sync();
    if let Some(e) = t.stop {
        return Err(e);
    }
    synced?;
    Ok(BatchOutcome { sent: t.sent, failures_by_class: t.failures })
}

/// What a request is for, as the journal records it.
pub struct RequestId<'a> {
    pub key: &'a str,
    pub doc_id: &'a str,
    pub task: &'a str,
    pub prompt_hash: &'a str,
    pub model: &'a str,
}
