//! Requests checked into events: every field of a submission, a service, a sandbox batch or a
//! heartbeat is validated against the state here, and a refusal names the field.

use super::*;

pub(super) fn bad(field: &str, reason: String) -> FieldProblem {
    FieldProblem {
        field: field.to_string(),
        reason,
    }
}

/// Names: 1 to 128 of letters, digits, '-', '_' and '.'.
pub(super) fn check_name(name: &str) -> Result<(), FieldProblem> {
    if name.is_empty() || name.len() > 128 {
        return Err(bad("name", "must be 1 to 128 characters".into()));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_.".contains(*c)))
    {
        return Err(bad(
            "name",
            format!("'{c}' is not allowed (letters, digits, '-', '_', '.')"),
        ));
    }
    Ok(())
}

/// Most bytes a task's command line may take (every argument together).
pub const MAX_COMMAND_BYTES: usize = 64 << 10;
/// Most bytes a task's environment may take (every name and value together): it is journaled
/// and replayed with every restart, and sent to every node the work runs on.
pub const MAX_ENV_BYTES: usize = 64 << 10;

/// Longest working directory a task may name.
pub const MAX_WORKDIR_BYTES: usize = 4096;

/// What a task runs: a program, bounded arguments and environment, and an absolute working
/// directory if any (the node checks it against its allowed root).
/// A command and environment to run in a live sandbox, checked as a submission's are.
pub fn check_command(
    command: &[String],
    env: &BTreeMap<String, String>,
) -> Result<(), FieldProblem> {
    check_task(command, env, &BTreeMap::new(), None)
}

pub(super) fn check_task(
    command: &[String],
    env: &BTreeMap<String, String>,
    secret_env: &BTreeMap<String, String>,
    workdir: Option<&String>,
) -> Result<(), FieldProblem> {
    if let Some(name) = secret_env.keys().find(|k| env.contains_key(*k)) {
        return Err(bad(
            &format!("secret_env.{name}"),
            "also named in env".into(),
        ));
    }
    if let Some(w) = workdir {
        if !w.starts_with('/') || w.len() > MAX_WORKDIR_BYTES || w.contains('\0') {
            return Err(bad(
                "workdir",
                format!("must be an absolute path of at most {MAX_WORKDIR_BYTES} bytes"),
            ));
        }
    }
    if command.first().is_some_and(|c| c.is_empty()) {
        return Err(bad("command", "the program name is empty".into()));
    }
    let bytes: usize = command.iter().map(String::len).sum();
    if bytes > MAX_COMMAND_BYTES {
        return Err(bad(
            "command",
            format!("{bytes} bytes; at most {MAX_COMMAND_BYTES}"),
        ));
    }
    let bytes: usize = env
        .iter()
        .chain(secret_env)
        .map(|(k, v)| k.len() + v.len())
        .sum();
    if bytes > MAX_ENV_BYTES {
        return Err(bad(
            "env",
            format!("{bytes} bytes of names and values; at most {MAX_ENV_BYTES}"),
        ));
    }
    Ok(())
}

pub(super) fn parse_priority(name: &str) -> Result<PriorityClass, FieldProblem> {
    serde_json::from_value(serde_json::Value::String(name.to_string())).map_err(|_| {
        bad(
            "priority",
            format!(
                "unknown class '{name}' (preemptible, research, training, production-inference)"
            ),
        )
    })
}

impl ControlPlane {
    /// What a submission's nodes run, checked (see [`check_task`]), with its secret values
    /// sealed.
    fn task_spec(
        &self,
        command: &[String],
        env: &BTreeMap<String, String>,
        secret_env: &BTreeMap<String, String>,
        workdir: Option<&String>,
    ) -> Result<TaskSpec, FieldProblem> {
        check_task(command, env, secret_env, workdir)?;
        Ok(TaskSpec {
            command: command.to_vec(),
            env: env.clone(),
            workdir: workdir.cloned(),
            sealed_env: self.seal_env(secret_env)?,
            interactive: None,
            template: None,
            egress: Vec::new(),
            ready_path: None,
            live_path: None,
            ready_command: None,
            live_command: None,
            roles: Vec::new(),
        })
    }

    /// `values` sealed under the server's key; `None` when there are none.
    fn seal_env(&self, values: &BTreeMap<String, String>) -> Result<Option<String>, FieldProblem> {
        if values.is_empty() {
            return Ok(None);
        }
        let key = self.secret_key.as_ref().ok_or_else(|| {
            bad(
                "secret_env",
                "this server has no secrets key (it keeps none)".into(),
            )
        })?;
        key.seal(values)
            .map(Some)
            .map_err(|e| bad("secret_env", e.to_string()))
    }

    /// Whether a tenant of this name exists.
    pub fn has_tenant(&self, name: &str) -> bool {
        self.tenants.iter().any(|t| t.name == name)
    }

    /// The events a heartbeat brings: the node coming up, tasks that exited, new checkpoints.
    /// Reports about stale runs are dropped (their tasks are told to stop by the reply).
    pub fn heartbeat_events(&self, hb: &Heartbeat, at: u64) -> Result<Vec<Event>, FieldProblem> {
        let up = self.node_is_up(&hb.node).ok_or_else(|| FieldProblem {
            field: "node".into(),
            reason: format!("no node '{}' in the fleet", hb.node),
        })?;
        let mut events = Vec::new();
        if let Some(a) = &hb.address {
            if !crate::api::is_node_address(a) {
                return Err(bad(
                    "address",
                    format!(
                        "a host name or IP address of at most {} bytes",
                        crate::api::MAX_NODE_ADDRESS
                    ),
                ));
            }
        }
        if !up {
            events.push(Event::NodeUp {
                node: hb.node.clone(),
                address: hb.address.clone(),
                at,
            });
        } else if let Some(a) = &hb.address {
            // An agent back with another address before its node was found down.
            if self
                .node_addresses
                .get(hb.node.as_str())
                .is_none_or(|k| **k != **a)
            {
                events.push(Event::NodeAddress {
                    node: hb.node.clone(),
                    address: a.clone(),
                    at,
                });
            }
        }
        let node = self.node(&hb.node).map_err(|e| FieldProblem {
            field: "node".into(),
            reason: e.to_string(),
        })?;
        if let Some(inv) = &hb.inventory {
            self.check_inventory(node, inv)?;
        }
        // Exits of live sandboxes on this node, per batch (one event each).
        let mut sandbox_exits: BTreeMap<BatchId, Vec<(u32, i32)>> = BTreeMap::new();
        let mut sandbox_ooms: BTreeMap<BatchId, Vec<u32>> = BTreeMap::new();
        for t in &hb.tasks {
            // Jobs and batches share one sequence: the report's id names one or the other.
            let (job, batch) = (JobId(t.job), BatchId(t.job));
            if self.batches.contains_key(&batch) {
                if let Some(code) = t.exit_code {
                    if self.sandbox_live_on(batch, t.rank, node) {
                        sandbox_exits.entry(batch).or_default().push((t.rank, code));
                        if t.oom_killed && code != 0 {
                            sandbox_ooms.entry(batch).or_default().push(t.rank);
                        }
                    }
                }
                continue;
            }
            // Only the node that runs the task speaks for it: a report for a run that is not
            // the current one, or for a rank placed on another node, is dropped.
            if self.current_world(job, t.run).is_err() || !self.runs_rank_on(job, t.rank, node) {
                continue;
            }
            let meta = self.jobs.get(&job);
            if let Some(c) = t.checkpoint_at {
                let newer = meta.is_some_and(|m| m.checkpoint_at.is_none_or(|p| c > p));
                if newer && t.exit_code.is_none() {
                    events.push(Event::Checkpoint {
                        job,
                        run: t.run,
                        at: c.min(at).max(self.now),
                    });
                }
            }
            if let (Some(e), None) = (&t.endpoint, t.exit_code) {
                events.extend(self.endpoint_event(job, t.run, t.rank, &hb.node, e, at));
            }
            if let Some(code) = t.exit_code {
                events.push(Event::TaskExited {
                    job,
                    run: t.run,
                    rank: t.rank,
                    code,
                    oom_killed: t.oom_killed && code != 0,
                    at,
                });
            }
        }
        for (batch, mut exited) in sandbox_exits {
            exited.sort_unstable();
            exited.dedup_by_key(|(i, _)| *i);
            let mut oom_killed = sandbox_ooms.remove(&batch).unwrap_or_default();
            oom_killed.sort_unstable();
            oom_killed.dedup();
            events.push(Event::SandboxesExited {
                batch,
                exited,
                oom_killed,
                at,
            });
        }
        Ok(events)
    }

    /// Whether what a node's agent found matches the fleet; a node that does not match takes
    /// no work (its heartbeats are refused, so it stays or goes down).
    pub(super) fn check_inventory(
        &self,
        node: NodeId,
        inv: &crate::api::Inventory,
    ) -> Result<(), FieldProblem> {
        let n = self.sched.engine().fleet().node(node);
        let want = u32::from(n.capacity.gpus);
        if inv.gpus != want {
            return Err(bad(
                "inventory.gpus",
                format!(
                    "node {} has {want} GPUs in the fleet; its agent found {} ({}): fix the fleet file or the node",
                    n.name, inv.gpus, inv.source
                ),
            ));
        }
        if let (Some(found), Some(model)) = (&inv.gpu_model, n.capacity.gpu_model) {
            let fleet_model = model.name();
            if !found.eq_ignore_ascii_case(fleet_model) {
                return Err(bad(
                    "inventory.gpu_model",
                    format!(
                        "node {} has {fleet_model} GPUs in the fleet; its agent found {found} ({})",
                        n.name, inv.source
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Turns a request into a `Submit` event, checking every field; changes nothing.
    pub fn submit_event(&self, req: &SubmitJob, at: u64) -> Result<Event, FieldProblem> {
        check_name(&req.name)?;
        let task = self.task_spec(
            &req.command,
            &req.env,
            &req.secret_env,
            req.workdir.as_ref(),
        )?;
        let tenant = self.tenant_id(&req.tenant)?;
        let priority = parse_priority(&req.priority)?;
        let gpu: GpuModel = req.gpu.parse().map_err(|e| bad("gpu", format!("{e}")))?;
        let models = self.other_models(gpu, &req.models)?;
        let spec = JobSpec {
            tenant,
            priority,
            gang: GangRequest {
                class: WorkloadClass::Training,
                gpu,
                nodes: req.nodes,
                gpus_per_node: req.gpus_per_node,
                cpu_millis_per_node: req.cpu_millis_per_node,
                memory_mib_per_node: req.memory_mib_per_node,
                segment: req.segment,
                spares: req.spares,
                parts: Vec::new(),
                gpu_milli: req.gpu_milli,
                models,
            },
            time_limit: req.time_limit_s,
            placement: (&req.placement).into(),
        };
        spec.validate().map_err(|e| {
            let field = if e.field == "time_limit" {
                "time_limit_s"
            } else {
                e.field
            };
            bad(field, e.reason)
        })?;
        self.check_placement(&spec.placement)?;
        self.check_fits_fleet("nodes", &spec.gang, 1)?;
        Ok(Event::Submit {
            id: JobId(self.next_id),
            name: req.name.clone(),
            spec,
            task,
            at,
        })
    }

    /// The other models a job accepts: names in order, or `["any"]` for every model of the
    /// fleet of `gpu`'s kind (a CUDA job never lands on a TPU), but `gpu`, most GPUs first.
    fn other_models(&self, gpu: GpuModel, names: &[String]) -> Result<Vec<GpuModel>, FieldProblem> {
        if names.len() > GangRequest::MAX_MODELS {
            return Err(bad(
                "models",
                format!("at most {} models", GangRequest::MAX_MODELS),
            ));
        }
        if names.len() == 1 && names[0].eq_ignore_ascii_case("any") {
            let total = self.sched.fleet_total();
            let mut all: Vec<GpuModel> = GpuModel::ALL
                .into_iter()
                .filter(|m| *m != gpu && m.kind() == gpu.kind() && total.gpus[m.index()] > 0)
                .collect();
            all.sort_by_key(|m| std::cmp::Reverse(total.gpus[m.index()]));
            all.truncate(GangRequest::MAX_MODELS);
            return Ok(all);
        }
        names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let field = format!("models[{i}]");
                let m = n
                    .parse::<GpuModel>()
                    .map_err(|e| bad(&field, format!("{e} (or [\"any\"])")))?;
                if m.kind() != gpu.kind() {
                    return Err(bad(
                        &field,
                        format!("{m} is not an accelerator of {gpu}'s kind: work built for one kind does not run on another"),
                    ));
                }
                Ok(m)
            })
            .collect()
    }

    /// Work that even the whole fleet could never hold is refused at once, not queued forever:
    /// `copies` gangs like `gang` (each on one of the models it accepts) need more GPUs than
    /// the fleet's models hold whole copies of.
    pub(super) fn check_fits_fleet(
        &self,
        field: &str,
        gang: &GangRequest,
        copies: u32,
    ) -> Result<(), FieldProblem> {
        let total = self.sched.fleet_total();
        let have: u64 = gang
            .acceptable_models()
            .map(|m| total.gpus[m.index()])
            .sum();
        if have == 0 {
            return Err(bad(field, format!("the fleet has no {} nodes", gang.gpu)));
        }
        // CPU work on GPU hosts: the hosts are there.
        if gang.total_gpus() == 0 {
            return Ok(());
        }
        // Each copy runs on one model: a model holds as many copies as its GPUs divide into.
        let per_copy = gang.total_gpus();
        let fit: u64 = gang
            .acceptable_models()
            .map(|m| total.gpus[m.index()] / per_copy)
            .sum();
        if u64::from(copies) <= fit {
            return Ok(());
        }
        let want = per_copy.saturating_mul(u64::from(copies));
        Err(bad(
            field,
            if gang.models.is_empty() {
                format!(
                    "{want} {} GPUs asked for; the whole fleet has {have}",
                    gang.gpu
                )
            } else {
                format!(
                    "{want} GPUs asked for, {per_copy} on one model each time; the fleet's {} \
                     GPUs of the models it accepts hold {fit} such",
                    have
                )
            },
        ))
    }

    /// A placement rule may name only providers and regions the fleet has (a typo would leave
    /// the work waiting for capacity that does not exist).
    pub(super) fn check_placement(&self, rule: &model::PlacementRule) -> Result<(), FieldProblem> {
        let pools = self.sched.engine().fleet().pools();
        for (field, names, of_pool) in [
            ("placement.providers", &rule.providers, true),
            ("placement.exclude_providers", &rule.exclude_providers, true),
            ("placement.regions", &rule.regions, false),
            ("placement.exclude_regions", &rule.exclude_regions, false),
        ] {
            for n in names {
                let known = pools.iter().any(|p| {
                    let have = if of_pool { &p.cloud } else { &p.region };
                    have == n
                });
                if !known {
                    let mut have: Vec<&str> = pools
                        .iter()
                        .map(|p| {
                            if of_pool {
                                p.cloud.as_str()
                            } else {
                                p.region.as_str()
                            }
                        })
                        .collect();
                    have.sort_unstable();
                    have.dedup();
                    return Err(bad(
                        field,
                        format!("'{n}' is not in this fleet (it has {})", have.join(", ")),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The id of the tenant named `name`.
    pub(super) fn tenant_id(&self, name: &str) -> Result<TenantId, FieldProblem> {
        self.tenants
            .iter()
            .position(|t| t.name == name)
            .map(|i| TenantId(i as u32))
            .ok_or_else(|| {
                let known: Vec<&str> = self.tenants.iter().map(|t| t.name.as_str()).collect();
                bad(
                    "tenant",
                    format!("unknown tenant '{name}' (known: {})", known.join(", ")),
                )
            })
    }

    pub(super) fn tenant_name(&self, id: TenantId) -> &str {
        self.tenants
            .get(id.0 as usize)
            .map_or("", |t| t.name.as_str())
    }

    /// Turns a request into a `ServiceCreate` event, checking every field; changes nothing.
    pub fn service_event(&self, req: &SubmitService, at: u64) -> Result<Event, FieldProblem> {
        check_name(&req.name)?;
        let tenant = self.tenant_id(&req.tenant)?;
        // Gateways route by tenant and name: one active service per name in a tenant.
        if self
            .services
            .values()
            .any(|m| m.tenant == tenant && m.deleted_at.is_none() && m.name == req.name)
        {
            return Err(bad(
                "name",
                format!(
                    "tenant '{}' already has an active service named '{}'",
                    req.tenant, req.name
                ),
            ));
        }
        let mut task = self.task_spec(
            &req.command,
            &req.env,
            &req.secret_env,
            req.workdir.as_ref(),
        )?;
        if let Some(path) = &req.ready_path {
            endpoints::check_probe_path("ready_path", path)?;
            task.ready_path = Some(path.clone());
        }
        if let Some(path) = &req.live_path {
            endpoints::check_probe_path("live_path", path)?;
            task.live_path = Some(path.clone());
        }
        for (field, command, path, set) in [
            (
                "ready_command",
                &req.ready_command,
                &req.ready_path,
                &mut task.ready_command,
            ),
            (
                "live_command",
                &req.live_command,
                &req.live_path,
                &mut task.live_command,
            ),
        ] {
            if let Some(c) = command {
                endpoints::check_probe_command(field, c, path.is_some())?;
                *set = Some(c.clone());
            }
        }
        let priority = parse_priority(&req.priority)?;
        let gpu: GpuModel = req.gpu.parse().map_err(|e| bad("gpu", format!("{e}")))?;
        let spread = match &req.spread {
            None => None,
            Some(r) => Some(SpreadRule {
                level: match r.level.as_str() {
                    "domain" => SpreadLevel::Domain,
                    "zone" => SpreadLevel::Zone,
                    "region" => SpreadLevel::Region,
                    "cloud" => SpreadLevel::Cloud,
                    other => {
                        return Err(bad(
                            "spread.level",
                            format!("unknown level '{other}' (domain, zone, region, cloud)"),
                        ))
                    }
                },
                max_per: r.max_per,
            }),
        };
        let models = self.other_models(gpu, &req.models)?;
        let replica = match self.unit_roles(req, gpu)? {
            Some(_) if !models.is_empty() => {
                return Err(bad("models", "a unit service runs on one model".into()));
            }
            Some((unit, roles)) => {
                task.roles = roles;
                unit
            }
            None => GangRequest {
                class: WorkloadClass::InferenceReplica,
                gpu,
                nodes: req.nodes_per_replica,
                gpus_per_node: req.gpus_per_node,
                cpu_millis_per_node: req.cpu_millis_per_node,
                memory_mib_per_node: req.memory_mib_per_node,
                segment: None,
                spares: 0,
                parts: Vec::new(),
                gpu_milli: 0,
                models,
            },
        };
        let spec = ServiceSpec {
            tenant,
            priority,
            replica,
            min_replicas: req.min_replicas,
            max_replicas: req.max_replicas.unwrap_or(req.min_replicas),
            spread,
            placement: (&req.placement).into(),
            min_providers: req.min_providers,
        };
        spec.validate().map_err(|e| {
            let field = match e.field {
                "nodes" => "nodes_per_replica",
                other => other,
            };
            bad(field, e.reason)
        })?;
        self.check_placement(&spec.placement)?;
        self.check_fits_fleet("max_replicas", &spec.replica, spec.max_replicas)?;
        if self.next_service >= sched::MAX_SERVICES {
            return Err(bad("", "this control plane holds no more services".into()));
        }
        let autoscale = req
            .autoscale
            .as_ref()
            .map(AutoscaleTargets::from_request)
            .transpose()?;
        Ok(Event::ServiceCreate {
            id: ServiceId(self.next_service),
            name: req.name.clone(),
            spec,
            task,
            autoscale,
            at,
        })
    }

    /// Turns a request into a `SandboxBatch` event, checking every field; changes nothing
    /// (whether the batch fits is known when the event applies).
    pub fn sandbox_event(&self, req: &SubmitSandboxes, at: u64) -> Result<Event, FieldProblem> {
        check_name(&req.name)?;
        let mut task = self.task_spec(
            &req.command,
            &req.env,
            &req.secret_env,
            req.workdir.as_ref(),
        )?;
        task.interactive = interactive(req)?;
        if let Some(name) = &req.template {
            if !wire::api::is_template_name(name) {
                return Err(bad(
                    "template",
                    "must be 1 to 64 lower-case letters, digits, '-', '_' or '.', starting with \
                     a letter or digit"
                        .into(),
                ));
            }
        }
        task.template = req.template.clone();
        task.egress = egress(req)?;
        let tenant = self.tenant_id(&req.tenant)?;
        let request = SandboxRequest {
            count: req.count,
            cpu_millis: req.cpu_millis,
            memory_mib: req.memory_mib,
        };
        request.validate().map_err(|e| bad(e.field, e.reason))?;
        if req.max_retries > 1000 {
            return Err(bad("max_retries", "must be at most 1000".into()));
        }
        Ok(Event::SandboxBatch {
            id: BatchId(self.next_id),
            name: req.name.clone(),
            tenant,
            request,
            max_retries: req.max_retries,
            task,
            at,
        })
    }
}

/// An interactive batch's lifetimes, checked; `None` for a batch that runs a command.
fn interactive(req: &SubmitSandboxes) -> Result<Option<Interactive>, FieldProblem> {
    if !req.interactive {
        for (field, given) in [
            ("timeout_s", req.timeout_s.is_some()),
            ("idle_timeout_s", req.idle_timeout_s.is_some()),
        ] {
            if given {
                return Err(bad(field, "only an interactive batch has one".into()));
            }
        }
        return Ok(None);
    }
    if !req.command.is_empty() {
        return Err(bad(
            "command",
            "an interactive sandbox runs no command of its own (run commands with exec)".into(),
        ));
    }
    let timeout_s = req.timeout_s.unwrap_or(DEFAULT_SESSION_S);
    if !(1..=MAX_SESSION_S).contains(&timeout_s) {
        return Err(bad("timeout_s", format!("must be 1..={MAX_SESSION_S}")));
    }
    let idle_timeout_s = req.idle_timeout_s.unwrap_or(DEFAULT_IDLE_S.min(timeout_s));
    if !(1..=timeout_s).contains(&idle_timeout_s) {
        return Err(bad(
            "idle_timeout_s",
            format!("must be 1..={timeout_s} (at most timeout_s)"),
        ));
    }
    Ok(Some(Interactive {
        timeout_s,
        idle_timeout_s,
    }))
}

/// A batch's egress allow-list, checked, each rule as it reads back.
fn egress(req: &SubmitSandboxes) -> Result<Vec<String>, FieldProblem> {
    if req.egress.is_empty() {
        return Ok(Vec::new());
    }
    if !req.interactive {
        return Err(bad(
            "egress",
            "only an interactive batch has an egress allow-list".into(),
        ));
    }
    if req.egress.len() > wire::api::MAX_EGRESS_RULES {
        return Err(bad(
            "egress",
            format!("at most {} rules", wire::api::MAX_EGRESS_RULES),
        ));
    }
    req.egress
        .iter()
        .enumerate()
        .map(|(i, text)| {
            wire::api::EgressRule::parse(text)
                .map(|rule| rule.to_string())
                .map_err(|why| bad(&format!("egress[{i}]"), why))
        })
        .collect()
}

/// An interactive sandbox's life when its request names none: an hour.
const DEFAULT_SESSION_S: u64 = 3600;
/// The longest life an interactive sandbox may ask for: a week.
const MAX_SESSION_S: u64 = 7 * 86_400;
/// An interactive sandbox's idle timeout when its request names none: ten minutes.
const DEFAULT_IDLE_S: u64 = 600;
