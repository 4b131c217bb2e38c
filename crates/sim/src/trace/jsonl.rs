//! Stargrid's JSONL trace (the format the parent module documents): each line parsed by its
//! kind with errors naming the field, the rows sorted with their lines kept; and the writer,
//! whose output reads back the same.

use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonJob {
    id: u64,
    submit: Time,
    duration: Time,
    gpus: u32,
    gpus_per_node: Option<u8>,
    nodes: Option<u32>,
    gpu: Option<model::GpuModel>,
    #[serde(default)]
    models: Vec<String>,
    #[serde(default)]
    gpu_milli: u16,
    #[serde(default)]
    cpu_millis: u32,
    #[serde(default)]
    memory_mib: u32,
    tenant: String,
    #[serde(default)]
    priority: PriorityClass,
    time_limit: Option<Time>,
    checkpoint_interval: Option<Time>,
    #[serde(default)]
    placement: PlacementRule,
}

/// One parsed line.
enum Row {
    Job(TraceJob),
    Service(TraceService),
    Sandboxes(TraceSandboxes),
}

/// Parses one line; errors name the field (or the character for malformed JSON).
fn parse_row(raw: &str) -> Result<Row, (String, String)> {
    let syntax = |e: serde_json::Error| (format!("char {}", e.column()), e.to_string());
    let mut value: serde_json::Value = serde_json::from_str(raw).map_err(syntax)?;
    // The kind picks the type; the other fields are that type's own.
    let kind = match value.as_object_mut().and_then(|o| o.remove("kind")) {
        None => "job".to_string(),
        Some(serde_json::Value::String(k)) => k,
        Some(_) => return Err(("kind".into(), "must be a string".into())),
    };
    // Name the field serde stopped at (a missing field is named in the reason).
    let shape = |e: serde_path_to_error::Error<serde_json::Error>| {
        let path = e.path().to_string();
        let field = if path == "." {
            "line".to_string()
        } else {
            path
        };
        (field, e.into_inner().to_string())
    };
    let bad = |field: &str, reason: &str| (field.to_string(), reason.to_string());
    let tenant_ok = |t: &str| {
        if t.trim().is_empty() {
            Err(bad("tenant", "is empty"))
        } else {
            Ok(())
        }
    };
    match kind.as_str() {
        "job" => {
            let j: JsonJob = serde_path_to_error::deserialize(value).map_err(shape)?;
            if j.duration == 0 {
                return Err(bad("duration", "must be at least 1 second"));
            }
            if j.gpus > 1_000_000 || (j.gpus == 0 && j.cpu_millis == 0) {
                return Err(bad(
                    "gpus",
                    "must be 1..=1000000 (0 only for CPU work on a GPU host, with cpu_millis)",
                ));
            }
            if j.gpu_milli > 999 || (j.gpu_milli > 0 && j.gpus != 1) {
                return Err(bad(
                    "gpu_milli",
                    "must be 1..=999 thousandths of one GPU, with gpus 1",
                ));
            }
            if (j.gpu_milli > 0 || j.gpus == 0)
                && (j.gpus_per_node.is_some_and(|g| g > 1) || j.nodes.is_some_and(|n| n > 1))
            {
                return Err(bad("nodes", "a share or CPU work runs on one node"));
            }
            let models = models::parse(&j.models).map_err(|(f, r)| bad(&f, &r))?;
            if j.checkpoint_interval == Some(0) {
                return Err(bad("checkpoint_interval", "must be at least 1 second"));
            }
            if let Some(g) = j.gpus_per_node {
                if g == 0 || g > model::Resources::MAX_GPUS || !j.gpus.is_multiple_of(u32::from(g))
                {
                    return Err(bad("gpus_per_node", "must be 1..=32 and divide gpus"));
                }
            }
            if let Some(n) = j.nodes {
                if n == 0 || !j.gpus.is_multiple_of(n) {
                    return Err(bad("nodes", "must be at least 1 and divide gpus"));
                }
                if j.gpus_per_node.is_some_and(|g| u32::from(g) * n != j.gpus) {
                    return Err(bad("nodes", "times gpus_per_node must be gpus"));
                }
                if j.gpus / n > u32::from(model::Resources::MAX_GPUS) {
                    return Err(bad("nodes", "leaves more than 32 GPUs per node"));
                }
            }
            tenant_ok(&j.tenant)?;
            Ok(Row::Job(TraceJob {
                id: j.id,
                submit: j.submit,
                duration: j.duration,
                gpus: j.gpus,
                gpus_per_node: j.gpus_per_node,
                nodes: j.nodes,
                gpu: j.gpu,
                models,
                gpu_milli: j.gpu_milli,
                cpu_millis: j.cpu_millis,
                memory_mib: j.memory_mib,
                tenant: j.tenant,
                priority: j.priority,
                time_limit: j
                    .time_limit
                    .unwrap_or_else(|| limit_from(j.duration))
                    .max(1),
                checkpoint_interval: j.checkpoint_interval,
                placement: (!is_open(&j.placement)).then(|| Box::new(j.placement)),
            }))
        }
        "service" => {
            let mut v: TraceService = serde_path_to_error::deserialize(value).map_err(shape)?;
            if !v.roles.is_empty() && !v.models.is_empty() {
                return Err(bad("models", "a unit service runs on one model"));
            }
            if !v.roles.is_empty() {
                let total = roles_total(&v.roles)?;
                if v.gpus_per_replica != 0 && v.gpus_per_replica != total {
                    return Err(bad(
                        "gpus_per_replica",
                        &format!("must be the roles' total ({total}) or left out"),
                    ));
                }
                v.gpus_per_replica = total;
            }
            if v.gpus_per_replica == 0 || v.gpus_per_replica > 100_000 {
                return Err(bad("gpus_per_replica", "must be 1..=100000"));
            }
            if v.max_replicas == 0 || v.max_replicas > model::ServiceSpec::MAX_REPLICAS {
                return Err(bad("max_replicas", "must be 1..=100000"));
            }
            if v.min_replicas > v.max_replicas {
                return Err(bad("min_replicas", "is above max_replicas"));
            }
            if !(v.inflight_per_replica.is_finite() && v.inflight_per_replica > 0.0) {
                return Err(bad("inflight_per_replica", "must be a positive number"));
            }
            if v.end.is_some_and(|e| e <= v.submit) {
                return Err(bad("end", "must be after submit"));
            }
            if v.spread.is_some_and(|r| r.max_per == 0) {
                return Err(bad("spread", "max_per must be at least 1"));
            }
            v.load.check().map_err(|(f, r)| (f.to_string(), r))?;
            tenant_ok(&v.tenant)?;
            Ok(Row::Service(v))
        }
        "sandboxes" => {
            let b: TraceSandboxes = serde_path_to_error::deserialize(value).map_err(shape)?;
            if b.count == 0 || b.count > model::SandboxRequest::MAX_BATCH {
                return Err(bad("count", "must be 1..=1000000"));
            }
            if b.cpu_millis == 0 {
                return Err(bad("cpu_millis", "must be at least 1"));
            }
            b.lifetime.check().map_err(|(f, r)| (f.to_string(), r))?;
            tenant_ok(&b.tenant)?;
            Ok(Row::Sandboxes(b))
        }
        other => Err((
            "kind".into(),
            format!("'{other}' is not one of job, service, sandboxes"),
        )),
    }
}

/// Reads Stargrid's JSONL trace (see the module documentation).
pub fn read_jsonl(file: &str, text: &str, skip_bad: bool) -> Result<Trace, TraceError> {
    let mut trace = Trace::default();
    let mut ids = std::collections::HashSet::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let parsed = parse_row(raw).and_then(|row| {
            let id = match &row {
                Row::Job(j) => j.id,
                Row::Service(v) => v.id,
                Row::Sandboxes(b) => b.id,
            };
            if ids.insert(id) {
                Ok(row)
            } else {
                Err(("id".into(), format!("{id} is used twice")))
            }
        });
        match parsed {
            Ok(Row::Job(j)) => {
                trace.jobs.push(j);
                trace.lines.jobs.push(line);
            }
            Ok(Row::Service(v)) => {
                trace.services.push(v);
                trace.lines.services.push(line);
            }
            Ok(Row::Sandboxes(b)) => {
                trace.sandboxes.push(b);
                trace.lines.sandboxes.push(line);
            }
            Err(_) if skip_bad => trace.skipped += 1,
            Err((column, reason)) => {
                return Err(TraceError {
                    file: file.to_string(),
                    line,
                    column,
                    reason,
                })
            }
        }
    }
    let lines = &mut trace.lines;
    lines.file = file.to_string();
    sort_with_lines(&mut trace.jobs, &mut lines.jobs, |j| (j.submit, j.id));
    sort_with_lines(&mut trace.services, &mut lines.services, |v| {
        (v.submit, v.id)
    });
    sort_with_lines(&mut trace.sandboxes, &mut lines.sandboxes, |b| {
        (b.submit, b.id)
    });
    Ok(trace)
}

/// Writes a trace in Stargrid's JSONL format (jobs, then services, then sandbox batches).
pub fn write_jsonl(trace: &Trace) -> String {
    let mut out = String::new();
    for j in &trace.jobs {
        let v = serde_json::json!({
            "id": j.id, "submit": j.submit, "duration": j.duration, "gpus": j.gpus,
            "gpus_per_node": j.gpus_per_node, "nodes": j.nodes, "gpu": j.gpu,
            "tenant": j.tenant, "priority": j.priority, "time_limit": j.time_limit,
            "checkpoint_interval": j.checkpoint_interval,
        });
        let mut v = v;
        if let Some(o) = v.as_object_mut() {
            if !j.models.is_empty() {
                o.insert("models".into(), models::to_json(&j.models));
            }
            for (key, value) in [
                ("gpu_milli", u32::from(j.gpu_milli)),
                ("cpu_millis", j.cpu_millis),
                ("memory_mib", j.memory_mib),
            ] {
                if value > 0 {
                    o.insert(key.into(), value.into());
                }
            }
        }
        if let Some(rule) = &j.placement {
            if let Some(o) = v.as_object_mut() {
                o.insert(
                    "placement".into(),
                    serde_json::to_value(rule).unwrap_or_default(),
                );
            }
        }
        out.push_str(&v.to_string());
        out.push('\n');
    }
    let mut line = |kind: &str, mut v: serde_json::Value| {
        if let Some(o) = v.as_object_mut() {
            o.insert("kind".into(), kind.into());
        }
        out.push_str(&v.to_string());
        out.push('\n');
    };
    for s in &trace.services {
        line("service", serde_json::to_value(s).unwrap_or_default());
    }
    for b in &trace.sandboxes {
        line("sandboxes", serde_json::to_value(b).unwrap_or_default());
    }
    out
}
