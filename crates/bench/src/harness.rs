//! The benchmark plan: starts the mock upstreams, tollgate and (optionally) LiteLLM, runs every
//! scenario against each target, and gathers the figures.

use crate::load::{self, Mode, RequestSpec};
use crate::procs::{self, Proc};
use crate::report::{self, Document, Run};
use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use hyper::Method;
use hyper::header::HeaderValue;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::process::Command;

/// Command-line choices that shape the plan.
#[derive(Debug, Clone)]
pub struct Options {
    pub quick: bool,
    pub litellm: bool,
    pub out: PathBuf,
    pub tollgate_bin: Option<PathBuf>,
    pub no_build: bool,
    pub only: Option<String>,
    pub litellm_workers: usize,
    /// Also run a Tollgate with relaxed durability.
    pub relaxed: bool,
    /// Also run a Tollgate whose store is a throwaway PostgreSQL (installed binaries needed).
    pub postgres: bool,
    /// Split each timed scenario into this many rounds and run the targets in turn within each
    /// round (direct, tollgate, …, direct, tollgate, …), so every target samples the same spells
    /// of the machine's noise; the rounds of a target are added up.
    pub rounds: u32,
    /// Also run a strict SQLite Tollgate from this binary (target `tollgate-versus`).
    pub versus: Option<PathBuf>,
    /// Also run nginx as a bare keep-alive reverse proxy in front of the plain mock (target
    /// `nginx`): the cost of one well-made proxy hop, as an anchor for the gateway's.
    pub nginx: bool,
}

/// Which mock serves a scenario's model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upstream {
    Plain,
    Stream,
    Slow,
    Failover,
}

impl Upstream {
    fn model(self) -> &'static str {
        match self {
            Upstream::Plain => "bench-plain",
            Upstream::Stream => "bench-stream",
            Upstream::Slow => "bench-slow",
            Upstream::Failover => "bench-failover",
        }
    }
}

/// The front door a scenario calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    /// `POST /v1/chat/completions`.
    Chat,
    /// `POST /v1/responses` (passed natively to the mock's `/responses`).
    Responses,
    /// `POST /v1/messages` (Anthropic's shape; translated to chat for an OpenAI-kind upstream,
    /// native at the mock when called directly).
    Messages,
}

impl Api {
    fn path(self) -> &'static str {
        match self {
            Api::Chat => "/v1/chat/completions",
            Api::Responses => "/v1/responses",
            Api::Messages => "/v1/messages",
        }
    }
}

/// One benchmark scenario.
#[derive(Debug, Clone)]
struct Scenario {
    name: &'static str,
    api: Api,
    upstream: Upstream,
    prompt_bytes: usize,
    stream: bool,
    mode: Mode,
    invalid_key: bool,
    /// Compare with the same target's run of this scenario instead of the direct run.
    baseline: Option<&'static str>,
}

fn scenarios(quick: bool) -> Vec<Scenario> {
    let d = Duration::from_secs(if quick { 2 } else { 10 });
    let closed = |connections| Mode::Closed {
        connections,
        duration: d,
    };
    let s = |name, upstream, prompt_bytes, stream, mode| Scenario {
        name,
        api: Api::Chat,
        upstream,
        prompt_bytes,
        stream,
        mode,
        invalid_key: false,
        baseline: None,
    };
    vec![
        s(
            "plain_1k_closed64",
            Upstream::Plain,
            1024,
            false,
            closed(64),
        ),
        s("plain_1k_serial", Upstream::Plain, 1024, false, closed(1)),
        s(
            "plain_1k_open2000",
            Upstream::Plain,
            1024,
            false,
            Mode::Open {
                rate: 2000,
                duration: d,
                connections: 128,
            },
        ),
        // CPU per request at a fixed high rate the machine can carry: a steadier figure to
        // compare builds with than saturation, where the load generator competes for the cores.
        s(
            "plain_1k_open10000",
            Upstream::Plain,
            1024,
            false,
            Mode::Open {
                rate: 10_000,
                duration: d,
                connections: 256,
            },
        ),
        Scenario {
            api: Api::Responses,
            ..s(
                "responses_1k_closed64",
                Upstream::Plain,
                1024,
                false,
                closed(64),
            )
        },
        Scenario {
            api: Api::Messages,
            ..s(
                "messages_1k_closed64",
                Upstream::Plain,
                1024,
                false,
                closed(64),
            )
        },
        s(
            "plain_10k_closed32",
            Upstream::Plain,
            10 * 1024,
            false,
            closed(32),
        ),
        s(
            "plain_100k_closed16",
            Upstream::Plain,
            100 * 1024,
            false,
            closed(16),
        ),
        s(
            "stream_200chunks_closed16",
            Upstream::Stream,
            1024,
            true,
            closed(16),
        ),
        s(
            "slow_stream_5000",
            Upstream::Slow,
            256,
            true,
            Mode::Burst {
                count: 5000,
                connects_per_second: 2000,
            },
        ),
        Scenario {
            invalid_key: true,
            baseline: Some("plain_1k_closed64"),
            ..s(
                "invalid_key_flood64",
                Upstream::Plain,
                1024,
                false,
                closed(64),
            )
        },
        s(
            "failover_500_then_ok32",
            Upstream::Failover,
            1024,
            false,
            closed(32),
        ),
    ]
}

/// The four mock upstreams, each its own child process.
struct Mocks {
    plain: Proc,
    stream: Proc,
    slow: Proc,
    fail: Proc,
}

impl Mocks {
    async fn start(quick: bool) -> anyhow::Result<Mocks> {
        let args = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        // ~6 s per slow stream, so all of them are open at once even while connections ramp up.
        let slow_gap = if quick { "500" } else { "600" };
        Ok(Mocks {
            plain: procs::spawn_mock("plain", &args(&["--response-tokens", "16"])).await?,
            stream: procs::spawn_mock(
                "stream",
                &args(&["--response-tokens", "200", "--chunk-gap-ms", "1"]),
            )
            .await?,
            slow: procs::spawn_mock(
                "slow",
                &args(&["--response-tokens", "10", "--chunk-gap-ms", slow_gap]),
            )
            .await?,
            fail: procs::spawn_mock("fail", &args(&["--status", "500"])).await?,
        })
    }

    /// The mock a direct request for `upstream` goes to (failover: the healthy one).
    fn direct(&self, upstream: Upstream) -> &Proc {
        match upstream {
            Upstream::Plain | Upstream::Failover => &self.plain,
            Upstream::Stream => &self.stream,
            Upstream::Slow => &self.slow,
        }
    }

    async fn stop(self) {
        for p in [self.plain, self.stream, self.slow, self.fail] {
            p.stop().await;
        }
    }
}

/// Something requests are sent to.
struct Target {
    name: &'static str,
    addr: SocketAddr,
    key: String,
    invalid_key: String,
    proc_pids: Box<dyn Fn() -> Vec<u32> + Send + Sync>,
    /// Only chat scenarios on the plain mock with a valid key (a bare proxy: no routing by
    /// model, no authentication).
    plain_only: bool,
}

/// The repository root: the nearest directory at or above the current one whose Cargo.toml
/// declares a `[workspace]` (falls back to where this crate was compiled).
fn workspace_root() -> PathBuf {
    let is_root = |d: &Path| {
        std::fs::read_to_string(d.join("Cargo.toml")).is_ok_and(|t| t.contains("[workspace]"))
    };
    if let Ok(cwd) = std::env::current_dir()
        && let Some(found) = cwd.ancestors().find(|d| is_root(d))
    {
        return found.to_path_buf();
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .and_then(Path::parent)
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

fn say(msg: impl std::fmt::Display) {
    eprintln!("[bench] {msg}");
}

/// Finds (building it first unless told not to) the tollgate release binary.
async fn tollgate_binary(opts: &Options) -> anyhow::Result<PathBuf> {
    tollgate_binary_at(opts.tollgate_bin.as_ref(), opts.no_build).await
}

/// `given` if set, else `target/release/tollgate`, built first unless `no_build`.
pub(crate) async fn tollgate_binary_at(
    given: Option<&PathBuf>,
    no_build: bool,
) -> anyhow::Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p.clone());
    }
    let root = workspace_root();
    let bin = target_dir(&root).join("release").join("tollgate");
    if !no_build {
        say("building tollgate (cargo build --release -p tollgate)...");
        let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["build", "--release", "-p", "tollgate"])
            .current_dir(&root)
            .status()
            .await;
        match status {
            Ok(s) if s.success() => {}
            other => say(format!(
                "cargo build of tollgate failed ({other:?}); using an existing binary if any"
            )),
        }
    }
    if bin.is_file() {
        Ok(bin)
    } else {
        bail!("{} not found", bin.display())
    }
}

/// Upstream addresses, by mock.
struct UpstreamAddrs {
    plain: SocketAddr,
    stream: SocketAddr,
    slow: SocketAddr,
    fail: SocketAddr,
}

/// How one Tollgate under test stores its ledger.
struct Variant {
    name: &'static str,
    durability: &'static str,
    /// `None`: SQLite in the variant's directory.
    postgres_url: Option<String>,
    /// `None`: the binary of `--tollgate-bin` (or the one built).
    bin: Option<PathBuf>,
}

fn tollgate_config(
    listen: SocketAddr,
    dir: &Path,
    up: &UpstreamAddrs,
    variant: &Variant,
) -> String {
    let provider = |name: &str, addr: SocketAddr| {
        format!(
            "[[providers]]\nname = \"{name}\"\nkind = \"openai\"\nbase_url = \"http://{addr}/v1\"\napi_key = \"sk-upstream\"\n\n"
        )
    };
    let model = |name: &str, provider: &str| {
        format!(
            "[[models]]\nname = \"{name}\"\nprovider = \"{provider}\"\nupstream_model = \"{name}\"\ninput_price = \"0.15\"\noutput_price = \"0.60\"\n\n"
        )
    };
    let storage = match &variant.postgres_url {
        Some(url) => format!(
            "url = \"{url}\"\nspool_dir = \"{}\"\n",
            dir.join("spool").display()
        ),
        None => format!("url = \"sqlite://{}\"\n", dir.join("ledger.db").display()),
    };
    let mut c = format!(
        "[server]\nlisten = \"{listen}\"\nadmin_token = \"bench-admin\"\n\n[storage]\n{storage}durability = \"{}\"\n\n",
        variant.durability
    );
    c += &provider("mock-plain", up.plain);
    c += &provider("mock-stream", up.stream);
    c += &provider("mock-slow", up.slow);
    c += &provider("mock-fail", up.fail);
    c += &model("bench-plain", "mock-plain");
    c += &model("bench-stream", "mock-stream");
    c += &model("bench-slow", "mock-slow");
    // Same name twice: the gateway tries providers in order, the first always answers 500.
    c += &model("bench-failover", "mock-fail");
    c += &model("bench-failover", "mock-plain");
    c
}

/// `id` of an admin API answer, whether a string or a number.
fn id_of(body: &[u8]) -> anyhow::Result<String> {
    let v: serde_json::Value = serde_json::from_slice(body)?;
    match &v["id"] {
        serde_json::Value::String(s) => Ok(s.clone()),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        _ => bail!("no id in {v}"),
    }
}

async fn admin(addr: SocketAddr, path: &str, name: &str) -> anyhow::Result<Bytes> {
    let body = serde_json::json!({ "name": name });
    let (status, bytes) =
        load::call(addr, Method::POST, path, Some("bench-admin"), Some(&body)).await?;
    if !(200..300).contains(&status) {
        bail!("POST {path}: {status} {}", String::from_utf8_lossy(&bytes));
    }
    Ok(bytes)
}

/// Creates an organization, a project and a key; returns the key.
async fn make_key(addr: SocketAddr) -> anyhow::Result<String> {
    let org = id_of(&admin(addr, "/admin/v1/organizations", "bench").await?)?;
    let project = id_of(
        &admin(
            addr,
            &format!("/admin/v1/organizations/{org}/projects"),
            "bench",
        )
        .await?,
    )?;
    let key = admin(addr, &format!("/admin/v1/projects/{project}/keys"), "bench").await?;
    let v: serde_json::Value = serde_json::from_slice(&key)?;
    v["key"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("no key in {v}"))
}

async fn start_tollgate(
    opts: &Options,
    dir: &Path,
    mocks: &Mocks,
    variant: &Variant,
) -> anyhow::Result<(Proc, String)> {
    let bin = match &variant.bin {
        Some(bin) => bin.clone(),
        None => tollgate_binary(opts).await?,
    };
    let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, procs::free_port()?));
    let dir = dir.join(variant.name);
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("tollgate.toml");
    let up = UpstreamAddrs {
        plain: mocks.plain.addr,
        stream: mocks.stream.addr,
        slow: mocks.slow.addr,
        fail: mocks.fail.addr,
    };
    std::fs::write(&config, tollgate_config(listen, &dir, &up, variant))?;
    let mut cmd = Command::new(&bin);
    cmd.arg("serve").arg("--config").arg(&config);
    let proc = procs::spawn_server(
        "tollgate",
        cmd,
        listen,
        "/healthz",
        &dir.join("tollgate.log"),
        Duration::from_secs(30),
    )
    .await?;
    let key = make_key(listen)
        .await
        .context("creating a client key via the admin API")?;
    Ok((proc, key))
}

/// Installs LiteLLM's proxy into `.venv-litellm` at the repository root if needed.
async fn litellm_venv(root: &Path, log: &Path) -> anyhow::Result<PathBuf> {
    let venv = root.join(".venv-litellm");
    let bin = venv.join("bin").join("litellm");
    if bin.is_file() {
        return Ok(bin);
    }
    say(format!(
        "installing litellm[proxy] into {} (log: {})",
        venv.display(),
        log.display()
    ));
    let out = std::fs::File::create(log)?;
    let run = |mut cmd: Command, what: &'static str| {
        let out = out.try_clone();
        async move {
            let out = out?;
            let err = out.try_clone()?;
            let status = tokio::time::timeout(
                Duration::from_secs(1200),
                cmd.stdout(out).stderr(err).kill_on_drop(true).status(),
            )
            .await
            .map_err(|_| anyhow!("{what} timed out"))??;
            if !status.success() {
                bail!("{what} failed: {status}");
            }
            Ok::<_, anyhow::Error>(())
        }
    };
    let mut mk = Command::new("python3");
    mk.args(["-m", "venv"]).arg(&venv);
    run(mk, "python3 -m venv").await?;
    let mut pip = Command::new(venv.join("bin").join("pip"));
    pip.args(["install", "--quiet", "litellm[proxy]"]);
    run(pip, "pip install litellm[proxy]").await?;
    if bin.is_file() {
        Ok(bin)
    } else {
        bail!("{} missing after install", bin.display())
    }
}

fn litellm_config(mocks: &Mocks) -> String {
    litellm_config_for(&[
        ("bench-plain", "bench-plain", mocks.plain.addr),
        ("bench-stream", "bench-stream", mocks.stream.addr),
        ("bench-slow", "bench-slow", mocks.slow.addr),
        ("bench-failover", "bench-failover", mocks.fail.addr),
        ("bench-failover-backup", "bench-failover", mocks.plain.addr),
    ])
}

/// LiteLLM `config.yaml`: `(model_name, upstream model, mock address)` entries, all as
/// OpenAI-compatible `api_base`s, with ordered fallback for the failover model.
fn litellm_config_for(entries: &[(&str, &str, SocketAddr)]) -> String {
    let mut c = String::from("model_list:\n");
    for (name, model, addr) in entries {
        c += &format!(
            "  - model_name: {name}\n    litellm_params:\n      model: openai/{model}\n      api_base: http://{addr}/v1\n      api_key: sk-upstream\n"
        );
    }
    c += "\nrouter_settings:\n  num_retries: 0\n  fallbacks: [{\"bench-failover\": [\"bench-failover-backup\"]}]\n";
    c += "\nlitellm_settings:\n  drop_params: true\n  request_timeout: 120\n";
    c += "\ngeneral_settings:\n  master_key: sk-bench-master\n";
    c
}

async fn start_litellm(opts: &Options, dir: &Path, mocks: &Mocks) -> anyhow::Result<Proc> {
    let root = workspace_root();
    let bin = litellm_venv(&root, &dir.join("litellm-install.log")).await?;
    let port = procs::free_port()?;
    let config = dir.join("litellm.yaml");
    std::fs::write(&config, litellm_config(mocks))?;
    let mut cmd = Command::new(bin);
    cmd.arg("--config")
        .arg(&config)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--num_workers", &opts.litellm_workers.to_string()]);
    procs::spawn_server(
        "litellm",
        cmd,
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        "/health/liveliness",
        &dir.join("litellm.log"),
        Duration::from_secs(240),
    )
    .await
}

/// nginx's `nginx.conf` for a bare keep-alive reverse proxy: every request to `listen` goes to
/// `upstream` over a pool of kept-alive connections (no buffering of the answer, no access log),
/// workers as many as cores; `/nginx-health` answers itself.
fn nginx_config(dir: &Path, listen: SocketAddr, upstream: SocketAddr) -> String {
    let d = dir.display();
    format!(
        "daemon off;\nmaster_process on;\nworker_processes auto;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
events {{\n  worker_connections 8192;\n}}\n\
http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
  keepalive_requests 1000000;\n\
  upstream mock {{\n    server {upstream};\n    keepalive 256;\n    keepalive_requests 1000000;\n  }}\n\
  server {{\n    listen {listen};\n\
    location = /nginx-health {{\n      return 200 \"ok\";\n    }}\n\
    location / {{\n      proxy_pass http://mock;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_buffering off;\n    }}\n  }}\n}}\n"
    )
}

/// The nginx binary: `nginx` on PATH or Debian's `/usr/sbin/nginx`.
fn nginx_binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("nginx"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| Some(PathBuf::from("/usr/sbin/nginx")).filter(|p| p.is_file()))
}

async fn start_nginx(dir: &Path, mocks: &Mocks) -> anyhow::Result<Proc> {
    let bin =
        nginx_binary().ok_or_else(|| anyhow!("nginx not found (Debian: apt-get install nginx)"))?;
    let dir = dir.join("nginx");
    std::fs::create_dir_all(&dir)?;
    let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, procs::free_port()?));
    let config = dir.join("nginx.conf");
    std::fs::write(&config, nginx_config(&dir, listen, mocks.plain.addr))?;
    let mut cmd = Command::new(bin);
    cmd.arg("-p").arg(&dir).arg("-c").arg(&config);
    procs::spawn_server(
        "nginx",
        cmd,
        listen,
        "/nginx-health",
        &dir.join("nginx.log"),
        Duration::from_secs(30),
    )
    .await
}

/// Adds a started proxy (LiteLLM, nginx) as a target, its CPU counted over its process tree
/// (workers included), or notes why it was skipped.
fn add_proxy(
    started: anyhow::Result<Proc>,
    name: &'static str,
    (key, invalid_key): (&str, &str),
    plain_only: bool,
    targets: &mut Vec<Target>,
    servers: &mut Vec<Proc>,
    notes: &mut Vec<String>,
) {
    match started {
        Ok(proc) => {
            say(format!("{name} ready on {}", proc.addr));
            let pid = proc.pid();
            targets.push(Target {
                name,
                addr: proc.addr,
                key: key.into(),
                invalid_key: invalid_key.into(),
                proc_pids: Box::new(move || procs::process_tree(pid)),
                plain_only,
            });
            servers.push(proc);
        }
        Err(e) => {
            let msg = format!("{name} skipped: {e:#}");
            say(&msg);
            notes.push(msg);
        }
    }
}

/// A prompt of about `bytes` bytes of words.
fn prompt(bytes: usize) -> String {
    const WORDS: [&str; 8] = [
        "lorem",
        "ipsum",
        "dolor",
        "sit",
        "amet",
        "consectetur",
        "adipiscing",
        "elit",
    ];
    let mut s = String::with_capacity(bytes + 16);
    let mut i = 0;
    while s.len() < bytes {
        s.push_str(WORDS[i % WORDS.len()]);
        s.push(' ');
        i += 1;
    }
    s
}

fn body_for(sc: &Scenario, model: &str) -> Bytes {
    match sc.api {
        Api::Chat => {}
        Api::Responses => {
            let b = serde_json::json!({
                "model": model,
                "input": prompt(sc.prompt_bytes),
                "max_output_tokens": 256,
                "stream": sc.stream,
            });
            return Bytes::from(b.to_string());
        }
        Api::Messages => {
            let b = serde_json::json!({
                "model": model,
                "max_tokens": 256,
                "messages": [{"role": "user", "content": prompt(sc.prompt_bytes)}],
                "stream": sc.stream,
            });
            return Bytes::from(b.to_string());
        }
    }
    let mut b = serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": prompt(sc.prompt_bytes)}],
        "max_tokens": 256,
    });
    if sc.stream {
        b["stream"] = serde_json::json!(true);
        b["stream_options"] = serde_json::json!({"include_usage": true});
    }
    Bytes::from(b.to_string())
}

/// One measurement of one scenario against one server (or the sum of several rounds).
struct Sample {
    result: load::LoadResult,
    cpu_us: u64,
    rss_before: u64,
    rss_peak: u64,
}

impl Sample {
    fn absorb(&mut self, other: Sample) {
        self.result.add_round(&other.result);
        self.cpu_us += other.cpu_us;
        self.rss_peak = self.rss_peak.max(other.rss_peak);
    }
}

/// The order of `n` targets in round `round`: the baseline (first) always first, the others
/// rotated one place per round, so no target always runs in the same place after the baseline
/// (e.g. right after the baseline's load, or just before the next round's).
fn round_order(n: usize, round: u32) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if n > 2 {
        order[1..].rotate_left(round as usize % (n - 1));
    }
    order
}

/// `mode` shortened to one of `rounds` rounds (a burst is not divided: it runs in round 0).
fn round_mode(mode: Mode, rounds: u32) -> Mode {
    let rounds = rounds.max(1);
    match mode {
        Mode::Closed {
            connections,
            duration,
        } => Mode::Closed {
            connections,
            duration: duration / rounds,
        },
        Mode::Open {
            rate,
            duration,
            connections,
        } => Mode::Open {
            rate,
            duration: duration / rounds,
            connections,
        },
        burst @ Mode::Burst { .. } => burst,
    }
}

/// Runs one scenario (or one round of it) against one server, sampling its memory while the
/// load runs.
async fn measure(sc: &Scenario, mode: Mode, target: &Target, ticks: u64) -> anyhow::Result<Sample> {
    let key = if sc.invalid_key {
        &target.invalid_key
    } else {
        &target.key
    };
    let spec = RequestSpec {
        addr: target.addr,
        path: sc.api.path().into(),
        auth: Some(HeaderValue::from_str(&format!("Bearer {key}"))?),
        body: body_for(sc, sc.upstream.model()),
        // Invalid keys must be refused: 401 from tollgate (OpenAI's status); any 4xx but 429
        // counts as a refusal, since other proxies pick other codes.
        expect: if sc.invalid_key {
            |s| (400..500).contains(&s) && s != 429
        } else {
            |s| s == 200
        },
        timeout: Duration::from_secs(60),
    };
    let pids = (target.proc_pids)();
    let rss_before = procs::rss_kib(&pids);
    let cpu_before = procs::cpu_micros(&pids, ticks);
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = Arc::clone(&stop);
        let pids = pids.clone();
        tokio::spawn(async move {
            let mut peak = 0;
            // At most 20 minutes of samples; the load itself is bounded far below that.
            for _ in 0..12_000 {
                peak = peak.max(procs::rss_kib(&pids));
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            peak
        })
    };
    let result = load::run(&spec, mode).await;
    stop.store(true, Ordering::Relaxed);
    let rss_peak = sampler.await.unwrap_or(0);
    let result = result?;
    let cpu_us = procs::cpu_micros(&pids, ticks).saturating_sub(cpu_before);
    Ok(Sample {
        result,
        cpu_us,
        rss_before,
        rss_peak: rss_peak.max(rss_before),
    })
}

/// Runs the whole plan and returns the document (also written to `opts.out`).
pub async fn run(opts: &Options) -> anyhow::Result<Document> {
    let ticks = procs::clock_ticks();
    let dir = tempfile::Builder::new()
        .prefix("tollgate-bench-")
        .tempdir()?;
    let mut notes = Vec::new();
    say("starting mock upstreams...");
    let mocks = Arc::new(Mocks::start(opts.quick).await?);

    let mut targets: Vec<Target> = Vec::new();
    let mut servers: Vec<Proc> = Vec::new();
    let mut variants = vec![Variant {
        name: "tollgate",
        durability: "strict",
        postgres_url: None,
        bin: None,
    }];
    if opts.relaxed {
        variants.push(Variant {
            name: "tollgate-relaxed",
            durability: "relaxed",
            postgres_url: None,
            bin: None,
        });
    }
    if let Some(bin) = &opts.versus {
        variants.push(Variant {
            name: "tollgate-versus",
            durability: "strict",
            postgres_url: None,
            bin: Some(bin.clone()),
        });
    }
    // Kept alive until the plan ends: dropping it stops and deletes the server.
    let mut _postgres = None;
    if opts.postgres {
        say("starting a throwaway PostgreSQL...");
        match tollgate_testkit::Postgres::start().and_then(|pg| {
            let url = pg.database("bench")?;
            Ok((pg, url))
        }) {
            Ok((pg, url)) => {
                _postgres = Some(pg);
                variants.push(Variant {
                    name: "tollgate-pg",
                    durability: "strict",
                    postgres_url: Some(url),
                    bin: None,
                });
            }
            Err(e) => {
                let msg = format!("tollgate-pg skipped: {e}");
                say(&msg);
                notes.push(msg);
            }
        }
    }
    for variant in &variants {
        let name = variant.name;
        match start_tollgate(opts, dir.path(), &mocks, variant).await {
            Ok((proc, key)) => {
                let pid = proc.pid();
                say(format!("{name} ready on {} (pid {pid})", proc.addr));
                targets.push(Target {
                    name,
                    addr: proc.addr,
                    key,
                    invalid_key: "tg-invalid-key-0000000000000000".into(),
                    proc_pids: Box::new(move || vec![pid]),
                    plain_only: false,
                });
                servers.push(proc);
            }
            Err(e) => {
                let msg = format!("{name} skipped: {e:#}");
                say(&msg);
                notes.push(msg);
            }
        }
    }
    if opts.litellm {
        let started = start_litellm(opts, dir.path(), &mocks).await;
        let keys = ("sk-bench-master", "sk-invalid");
        add_proxy(
            started,
            "litellm",
            keys,
            false,
            &mut targets,
            &mut servers,
            &mut notes,
        );
    }
    if opts.nginx {
        let started = start_nginx(dir.path(), &mocks).await;
        let keys = ("sk-upstream", "sk-upstream");
        add_proxy(
            started,
            "nginx",
            keys,
            true,
            &mut targets,
            &mut servers,
            &mut notes,
        );
    }

    let mut runs: Vec<Run> = Vec::new();
    for sc in scenarios(opts.quick) {
        if let Some(only) = &opts.only
            && !sc.name.contains(only.as_str())
        {
            continue;
        }
        let mut all: Vec<Target> = Vec::new();
        if sc.baseline.is_none() {
            let mock = mocks.direct(sc.upstream);
            let pid = mock.pid();
            all.push(Target {
                name: "direct",
                addr: mock.addr,
                key: "sk-upstream".into(),
                invalid_key: "sk-upstream".into(),
                proc_pids: Box::new(move || vec![pid]),
                plain_only: false,
            });
        }
        for t in &targets {
            if t.plain_only
                && (sc.upstream != Upstream::Plain || sc.api != Api::Chat || sc.invalid_key)
            {
                continue;
            }
            let (name, addr, key, invalid_key) =
                (t.name, t.addr, t.key.clone(), t.invalid_key.clone());
            let pids = (t.proc_pids)();
            let root_pid = pids.first().copied().unwrap_or(0);
            all.push(Target {
                name,
                addr,
                key,
                invalid_key,
                proc_pids: Box::new(move || procs::process_tree(root_pid)),
                plain_only: t.plain_only,
            });
        }
        let burst = matches!(sc.mode, Mode::Burst { .. });
        let rounds = if burst { 1 } else { opts.rounds.max(1) };
        let mode = round_mode(sc.mode, rounds);
        let mut samples: Vec<Option<Sample>> = all.iter().map(|_| None).collect();
        let mut failed = vec![false; all.len()];
        for round in 0..rounds {
            for i in round_order(all.len(), round) {
                let t = &all[i];
                if failed[i] {
                    continue;
                }
                if rounds > 1 {
                    say(format!(
                        "{} -> {} (round {}/{rounds})",
                        sc.name,
                        t.name,
                        round + 1
                    ));
                } else {
                    say(format!("{} -> {}", sc.name, t.name));
                }
                match measure(&sc, mode, t, ticks).await {
                    Ok(sample) => match &mut samples[i] {
                        Some(sum) => sum.absorb(sample),
                        slot => *slot = Some(sample),
                    },
                    Err(e) => {
                        let msg = format!("{} -> {} failed: {e:#}", sc.name, t.name);
                        say(&msg);
                        notes.push(msg);
                        failed[i] = true;
                    }
                }
                // Let connections close and the servers settle between runs.
                tokio::time::sleep(Duration::from_millis(if opts.quick { 300 } else { 1000 }))
                    .await;
            }
        }
        for (t, sample) in all.iter().zip(samples) {
            if let Some(s) = sample {
                runs.push(Run::new(
                    sc.name,
                    t.name,
                    &s.result,
                    s.cpu_us,
                    s.rss_before,
                    s.rss_peak,
                    burst,
                ));
            }
        }
    }

    let scenario_list = scenarios(opts.quick);
    let comparisons = runs
        .iter()
        .filter_map(|run| {
            let sc = scenario_list.iter().find(|s| s.name == run.scenario)?;
            let base = match sc.baseline {
                Some(b) => runs
                    .iter()
                    .find(|r| r.scenario == b && r.target == run.target)?,
                None => runs
                    .iter()
                    .find(|r| r.scenario == run.scenario && r.target == "direct")?,
            };
            (!std::ptr::eq(base, run)).then(|| report::compare(run, base))
        })
        .collect();

    for s in servers {
        s.stop().await;
    }
    if let Ok(m) = Arc::try_unwrap(mocks) {
        m.stop().await;
    }
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(workspace_root())
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    let doc = Document {
        tool: "tollgate-bench",
        commit,
        unix_time: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        quick: opts.quick,
        cpus: std::thread::available_parallelism().map_or(1, usize::from),
        notes,
        runs,
        comparisons,
    };
    if let Some(parent) = opts.out.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&opts.out, serde_json::to_vec_pretty(&doc)?)
        .with_context(|| format!("writing {}", opts.out.display()))?;
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_has_the_requested_size() {
        for n in [256, 1024, 100 * 1024] {
            let p = prompt(n);
            assert!(p.len() >= n && p.len() < n + 16, "{n} -> {}", p.len());
        }
    }

    #[test]
    fn scenario_names_are_unique_and_baselines_exist() {
        let list = scenarios(true);
        for (i, s) in list.iter().enumerate() {
            assert!(list[i + 1..].iter().all(|o| o.name != s.name));
            if let Some(b) = s.baseline {
                assert!(list.iter().any(|o| o.name == b));
            }
        }
    }

    #[test]
    fn targets_take_turns_after_the_baseline() {
        assert_eq!(round_order(1, 3), vec![0]);
        assert_eq!(round_order(2, 1), vec![0, 1]);
        assert_eq!(round_order(3, 0), vec![0, 1, 2]);
        assert_eq!(round_order(3, 1), vec![0, 2, 1]);
        assert_eq!(round_order(4, 1), vec![0, 2, 3, 1]);
        assert_eq!(round_order(4, 2), vec![0, 3, 1, 2]);
        assert_eq!(round_order(4, 3), vec![0, 1, 2, 3]);
    }

    #[test]
    fn rounds_divide_timed_loads_and_leave_bursts_whole() {
        let closed = Mode::Closed {
            connections: 64,
            duration: Duration::from_secs(10),
        };
        match round_mode(closed, 5) {
            Mode::Closed {
                connections,
                duration,
            } => assert_eq!((connections, duration), (64, Duration::from_secs(2))),
            other => panic!("{other:?}"),
        }
        let open = Mode::Open {
            rate: 2000,
            duration: Duration::from_secs(10),
            connections: 256,
        };
        match round_mode(open, 4) {
            Mode::Open { rate, duration, .. } => {
                assert_eq!((rate, duration), (2000, Duration::from_millis(2500)));
            }
            other => panic!("{other:?}"),
        }
        let burst = Mode::Burst {
            count: 5000,
            connects_per_second: 1000,
        };
        assert!(matches!(
            round_mode(burst, 5),
            Mode::Burst { count: 5000, .. }
        ));
        assert!(matches!(
            round_mode(closed, 0),
            Mode::Closed { duration, .. } if duration == Duration::from_secs(10)
        ));
    }

    #[test]
    fn stream_bodies_ask_for_usage() {
        let sc = scenarios(true).into_iter().find(|s| s.stream).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body_for(&sc, "m")).unwrap();
        assert_eq!(v["stream"], true);
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["model"], "m");
    }

    /// A stand-in for tollgate's admin API that checks what the harness sends.
    async fn fake_admin() -> SocketAddr {
        use http_body_util::{BodyExt, Full};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let svc = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let auth_ok = req.headers().get("authorization").map(|v| v.as_bytes())
                            == Some(b"Bearer bench-admin".as_slice());
                        let path = req.uri().path().to_owned();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let name: serde_json::Value = serde_json::from_slice(&body).unwrap();
                        let (status, out) = match path.as_str() {
                            _ if !auth_ok || name["name"] != "bench" => (401, r#"{"error":{}}"#),
                            "/admin/v1/organizations" => (201, r#"{"id":"org_9"}"#),
                            "/admin/v1/organizations/org_9/projects" => (201, r#"{"id":42}"#),
                            "/admin/v1/projects/42/keys" => {
                                (201, r#"{"id":"k1","key":"tg-secret"}"#)
                            }
                            _ => (404, "{}"),
                        };
                        let mut resp =
                            hyper::Response::new(Full::new(Bytes::from_static(out.as_bytes())));
                        *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                        Ok::<_, std::convert::Infallible>(resp)
                    },
                );
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc),
                );
            }
        });
        addr
    }

    #[tokio::test]
    async fn make_key_walks_the_admin_api() {
        let addr = fake_admin().await;
        assert_eq!(make_key(addr).await.unwrap(), "tg-secret");
    }

    #[test]
    fn tollgate_config_is_valid_and_lists_failover_in_order() {
        let a = |p: u16| SocketAddr::from((Ipv4Addr::LOCALHOST, p));
        let up = UpstreamAddrs {
            plain: a(1001),
            stream: a(1002),
            slow: a(1003),
            fail: a(1004),
        };
        let strict = Variant {
            name: "tollgate",
            durability: "strict",
            postgres_url: None,
            bin: None,
        };
        let text = tollgate_config(a(2000), Path::new("/tmp/x"), &up, &strict);
        let config = tollgate_config::Config::from_toml(&text).unwrap();
        config.validate().unwrap();
        assert_eq!(config.server.listen, "127.0.0.1:2000");
        assert_eq!(config.server.admin_token.as_deref(), Some("bench-admin"));
        assert_eq!(config.storage.url, "sqlite:///tmp/x/ledger.db");
        let failover: Vec<&str> = config
            .models
            .iter()
            .filter(|m| m.name == "bench-failover")
            .map(|m| m.provider.as_str())
            .collect();
        assert_eq!(failover, ["mock-fail", "mock-plain"]);
        let fail = config
            .providers
            .iter()
            .find(|p| p.name == "mock-fail")
            .unwrap();
        assert_eq!(fail.base_url.as_deref(), Some("http://127.0.0.1:1004/v1"));
    }

    #[test]
    fn nginx_config_is_a_keep_alive_proxy_to_the_mock() {
        let dir = Path::new("/tmp/nginx-x");
        let text = nginx_config(
            dir,
            SocketAddr::from((Ipv4Addr::LOCALHOST, 8)),
            SocketAddr::from((Ipv4Addr::LOCALHOST, 7)),
        );
        assert!(text.contains("upstream mock {\n    server 127.0.0.1:7;\n    keepalive 256;"));
        assert!(text.contains("listen 127.0.0.1:8;"));
        assert!(text.contains("proxy_http_version 1.1;\n      proxy_set_header Connection \"\";"));
        assert!(text.contains("pid /tmp/nginx-x/nginx.pid;"));
        assert!(text.contains("access_log off;"));
    }

    #[test]
    fn litellm_config_points_at_the_mocks() {
        let text = litellm_config_for(&[(
            "bench-plain",
            "bench-plain",
            SocketAddr::from((Ipv4Addr::LOCALHOST, 7)),
        )]);
        assert!(text.contains("  - model_name: bench-plain\n    litellm_params:\n      model: openai/bench-plain\n      api_base: http://127.0.0.1:7/v1\n"));
        assert!(text.contains("master_key: sk-bench-master"));
        assert!(text.contains("fallbacks: [{\"bench-failover\": [\"bench-failover-backup\"]}]"));
    }

    #[test]
    fn id_accepts_strings_and_numbers() {
        assert_eq!(id_of(br#"{"id":"org_1"}"#).unwrap(), "org_1");
        assert_eq!(id_of(br#"{"id":7}"#).unwrap(), "7");
        assert!(id_of(br#"{"name":"x"}"#).is_err());
    }
}
