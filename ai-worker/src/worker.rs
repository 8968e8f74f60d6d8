//! The worker loop: `concurrency` slots, each leasing a job from the node, keeping its lease
//! alive with heartbeats, fetching the series (WADO-RS), analysing it on a blocking thread,
//! storing the SEG and SR (STOW-RS) and reporting the outcome.
//!
//! Shutdown (SIGTERM or Ctrl-C): slots stop leasing; a job in progress may finish within the
//! grace period, after which it is given back to the node (`release`, the attempt does not
//! count). A worker that is killed outright loses its lease when it expires, and the node hands
//! the job to another worker.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::analysis::{analyse, ms, JobFailure, OutputIdentity};
use crate::dicom_out::Equipment;
use crate::inference::{init_runtime, Runner, RuntimeOptions};
use crate::model;
use crate::node_client::{Held, Job, NodeClient};

/// Everything the worker needs to run (see `main.rs` for where each value comes from).
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub node: String,
    pub token: String,
    pub dicomweb_root: String,
    pub models_dir: PathBuf,
    pub worker_id: String,
    pub concurrency: usize,
    pub runtime: RuntimeOptions,
    pub lease_secs: u64,
    pub poll_interval: Duration,
    pub shutdown_grace: Duration,
    /// Test hook: sleep this long after leasing each job (to kill or stop a worker mid-job).
    pub pause_after_lease: Duration,
}

/// Loads the models and runs until `shutdown` turns true and every slot has stopped.
pub async fn run(settings: WorkerSettings, shutdown: watch::Receiver<bool>) -> Result<(), String> {
    let library = init_runtime(&settings.runtime).map_err(|e| e.to_string())?;
    let models = model::load_all(&settings.models_dir)
        .map_err(|e| format!("models in {}: {e}", settings.models_dir.display()))?;
    if models.is_empty() {
        return Err(format!(
            "no model folder in {}",
            settings.models_dir.display()
        ));
    }
    let mut runners = HashMap::new();
    for m in models {
        let name = m.name().to_string();
        let runner = Runner::new(m, &settings.runtime).map_err(|e| e.to_string())?;
        info!(model = %name, version = runner.model().version(), provider = runner.execution_provider(), "model loaded");
        runners.insert(name, Arc::new(runner));
    }
    let client = NodeClient::new(&settings.node, &settings.dicomweb_root, &settings.token)
        .map_err(|e| e.to_string())?;
    let mut names: Vec<String> = runners.keys().cloned().collect();
    names.sort();
    info!(
        worker = %settings.worker_id,
        node = %settings.node,
        onnxruntime = %library.display(),
        models = ?names,
        concurrency = settings.concurrency,
        "worker started"
    );
    let equipment = Equipment::worker(settings.worker_id.clone());
    let shared = Arc::new(Shared {
        settings,
        client,
        runners,
        names,
        equipment,
    });
    let mut slots = Vec::new();
    for slot in 0..shared.settings.concurrency.max(1) {
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        slots.push(tokio::spawn(async move {
            slot_loop(shared, slot, shutdown).await
        }));
    }
    for slot in slots {
        let _ = slot.await;
    }
    info!("worker stopped");
    Ok(())
}

struct Shared {
    settings: WorkerSettings,
    client: NodeClient,
    runners: HashMap<String, Arc<Runner>>,
    names: Vec<String>,
    equipment: Equipment,
}

async fn slot_loop(shared: Arc<Shared>, slot: usize, mut shutdown: watch::Receiver<bool>) {
    let mut backoff = Duration::from_millis(500);
    loop {
        if *shutdown.borrow() {
            return;
        }
        let leased = shared
            .client
            .lease(
                &shared.settings.worker_id,
                &shared.names,
                shared.settings.lease_secs,
            )
            .await;
        let wait = match leased {
            Ok(Some(job)) => {
                backoff = Duration::from_millis(500);
                run_job(&shared, slot, job, shutdown.clone()).await;
                continue;
            }
            Ok(None) => shared.settings.poll_interval,
            Err(e) => {
                warn!(slot, error = %e, "cannot lease a job");
                backoff = (backoff * 2).min(Duration::from_secs(30));
                backoff
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Resolves `grace` after shutdown starts (never when it does not).
async fn grace_over(mut shutdown: watch::Receiver<bool>, grace: Duration) {
    while !*shutdown.borrow() {
        if shutdown.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
    tokio::time::sleep(grace).await;
}

async fn run_job(shared: &Arc<Shared>, slot: usize, job: Job, shutdown: watch::Receiver<bool>) {
    let worker = shared.settings.worker_id.clone();
    info!(slot, job = job.id, model = %job.model, series = %job.series_instance_uid, attempt = job.attempts, "job leased");
    let lost = Arc::new(AtomicBool::new(false));
    let heartbeat = {
        let shared = shared.clone();
        let lost = lost.clone();
        let id = job.id;
        tokio::spawn(async move {
            let every = Duration::from_secs(shared.settings.lease_secs.max(3) / 3);
            loop {
                tokio::time::sleep(every).await;
                match shared
                    .client
                    .heartbeat(id, &shared.settings.worker_id, shared.settings.lease_secs)
                    .await
                {
                    Ok(Held::Yes) => {}
                    Ok(Held::Lost) => {
                        warn!(
                            job = id,
                            "the node says this worker no longer holds the job"
                        );
                        lost.store(true, Ordering::SeqCst);
                        return;
                    }
                    Err(e) => warn!(job = id, error = %e, "heartbeat failed"),
                }
            }
        })
    };

    let outcome = tokio::select! {
        outcome = process(shared, &job, &lost) => Some(outcome),
        _ = grace_over(shutdown, shared.settings.shutdown_grace) => None,
    };
    heartbeat.abort();

    let report = match outcome {
        None => {
            info!(job = job.id, "shutting down: giving the job back");
            shared.client.release(job.id, &worker).await
        }
        Some(_) if lost.load(Ordering::SeqCst) => {
            warn!(job = job.id, "job dropped: lease lost");
            return;
        }
        Some(Ok(result)) => {
            info!(job = job.id, result = %result, "job succeeded");
            shared.client.complete(job.id, &worker, result).await
        }
        Some(Err(failure)) => {
            warn!(job = job.id, retryable = failure.retryable, error = %failure.message, "job failed");
            shared
                .client
                .fail(job.id, &worker, &failure.message, failure.retryable)
                .await
        }
    };
    match report {
        Ok(Held::Yes) => {}
        Ok(Held::Lost) => warn!(job = job.id, "the node no longer gave this worker the job"),
        Err(e) => warn!(job = job.id, error = %e, "cannot report the job's outcome"),
    }
}

/// Fetch, analyse, store: the job's result record, or why it failed.
async fn process(
    shared: &Arc<Shared>,
    job: &Job,
    lost: &AtomicBool,
) -> Result<serde_json::Value, JobFailure> {
    let total = Instant::now();
    if !shared.settings.pause_after_lease.is_zero() {
        tokio::time::sleep(shared.settings.pause_after_lease).await;
    }
    let runner = shared.runners.get(&job.model).cloned().ok_or_else(|| {
        JobFailure::permanent(format!("this worker has no model {:?}", job.model))
    })?;

    let start = Instant::now();
    let instances = shared
        .client
        .fetch_series(&job.study_instance_uid, &job.series_instance_uid)
        .await?;
    let fetch = start.elapsed();
    let fetched_bytes: usize = instances.iter().map(|b| b.len()).sum();

    let identity = OutputIdentity {
        study_instance_uid: job.study_instance_uid.clone(),
        series_instance_uid: job.series_instance_uid.clone(),
        model: runner.model().name().to_string(),
        model_version: runner.model().version().to_string(),
        run: job.run,
    };
    let equipment = shared.equipment.clone();
    let outputs =
        tokio::task::spawn_blocking(move || analyse(instances, &runner, &equipment, &identity))
            .await
            .map_err(|e| JobFailure::transient(format!("analysis thread: {e}")))??;

    if lost.load(Ordering::SeqCst) {
        return Err(JobFailure::transient("lease lost before storing"));
    }
    let start = Instant::now();
    if !outputs.objects.is_empty() {
        shared
            .client
            .store(&job.study_instance_uid, &outputs.objects)
            .await?;
    }
    let store = start.elapsed();

    let mut result = outputs.result;
    let mut timings = outputs.timings.to_json();
    timings["fetch_ms"] = json!(ms(fetch));
    timings["store_ms"] = json!(ms(store));
    timings["total_ms"] = json!(ms(total.elapsed()));
    result["timings"] = timings;
    result["fetched_bytes"] = json!(fetched_bytes);
    result["worker"] = json!(shared.settings.worker_id);
    if job.model_version != result["model_version"] {
        result["queued_model_version"] = json!(job.model_version);
    }
    Ok(result)
}
