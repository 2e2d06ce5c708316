//! Child processes (mock upstreams, tollgate, LiteLLM) and `/proc` accounting: CPU time
//! (utime + stime) and resident memory (VmRSS) of a process and all its descendants.

use anyhow::{Context as _, anyhow, bail};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// Clock ticks per second for `/proc/PID/stat` times (`getconf CLK_TCK`, 100 on Linux).
pub fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t: &u64| t > 0)
        .unwrap_or(100)
}

/// `(ppid, utime + stime in ticks)` from `/proc/PID/stat`.
fn stat(pid: u32) -> Option<(u32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

/// `pid` and all its descendants.
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            if let Some(p) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
                && let Some((ppid, _)) = stat(p)
            {
                parents.push((p, ppid));
            }
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    tree
}

/// CPU time (user + system) of the tree, in microseconds.
pub fn cpu_micros(pids: &[u32], ticks: u64) -> u64 {
    let ticks_total: u64 = pids.iter().filter_map(|&p| stat(p)).map(|(_, t)| t).sum();
    ticks_total.saturating_mul(1_000_000) / ticks.max(1)
}

/// Resident memory of the tree, in KiB (VmRSS).
pub fn rss_kib(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|&p| {
            let text = std::fs::read_to_string(format!("/proc/{p}/status")).ok()?;
            let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .sum()
}

/// A free loopback port (bound then released; the race is acceptable for a benchmark).
pub fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// A child process; it and its descendants are killed when it is dropped.
pub struct Proc {
    pub child: Child,
    pub addr: SocketAddr,
    _stdout: Option<ChildStdout>,
    _stdin: Option<ChildStdin>,
}

/// SIGKILLs `pid`'s descendants (e.g. LiteLLM's workers), deepest last.
fn kill_descendants(pid: u32) {
    let tree = process_tree(pid);
    if tree.len() > 1 {
        let _ = std::process::Command::new("kill")
            .arg("-KILL")
            .args(tree[1..].iter().map(u32::to_string))
            .stderr(Stdio::null())
            .status();
    }
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Stops the process and its descendants (SIGKILL) and reaps it.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            kill_descendants(pid);
        }
        let _ = self.child.kill().await;
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // `kill_on_drop` takes care of the process itself.
        if let Some(pid) = self.child.id() {
            kill_descendants(pid);
        }
    }
}

/// Starts `tollgate-bench mock ...` (this executable) and reads its address from stdout.
pub async fn spawn_mock(name: &str, args: &[String]) -> anyhow::Result<Proc> {
    let exe = std::env::current_exe().context("locating the bench executable")?;
    let mut child = Command::new(exe)
        .arg("mock")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--exit-on-stdin-eof")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting mock {name}"))?;
    // The mock exits when this pipe closes, so it never outlives the harness.
    let stdin = child.stdin.take();
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("mock {name}: no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .map_err(|_| anyhow!("mock {name} did not report its address"))??
        .ok_or_else(|| anyhow!("mock {name} exited before listening"))?;
    let addr: SocketAddr = line
        .rsplit("http://")
        .next()
        .unwrap_or_default()
        .trim()
        .parse()
        .with_context(|| format!("mock {name}: unexpected first line {line:?}"))?;
    Ok(Proc {
        child,
        addr,
        _stdout: Some(lines.into_inner().into_inner()),
        _stdin: stdin,
    })
}

/// Starts a server process whose output goes to `log`, then waits until `GET health_path`
/// answers 200 (at most `ready_within`).
pub async fn spawn_server(
    name: &str,
    mut cmd: Command,
    addr: SocketAddr,
    health_path: &str,
    log: &Path,
    ready_within: Duration,
) -> anyhow::Result<Proc> {
    let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone()?;
    let mut child = cmd
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    let deadline = Instant::now() + ready_within;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!(
                "{name} exited with {status} before it was ready; log:\n{}",
                tail(log)
            );
        }
        if let Ok((200, _)) =
            crate::load::call(addr, hyper::Method::GET, health_path, None, None).await
        {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill().await;
            bail!(
                "{name} not ready within {ready_within:?}; log:\n{}",
                tail(log)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(Proc {
        child,
        addr,
        _stdout: None,
        _stdin: None,
    })
}

/// The last lines of a log file.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_cpu_and_memory() {
        let me = std::process::id();
        let tree = process_tree(me);
        assert_eq!(tree[0], me);
        assert!(rss_kib(&[me]) > 0);
        // Burn a little CPU so the counter is non-zero.
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        assert!(cpu_micros(&[me], clock_ticks()) > 0);
    }

    #[test]
    fn missing_processes_count_as_nothing() {
        assert_eq!(rss_kib(&[u32::MAX]), 0);
        assert_eq!(cpu_micros(&[u32::MAX], 100), 0);
    }
}
