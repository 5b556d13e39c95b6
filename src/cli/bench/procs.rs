//! The processes a bench run owns: the worker processes, and what `/proc` says about their CPU time and memory (and
//! the throwaway `redis-server`'s, which [`crate::cli::redis_server`] starts).
//!
//! Everything started here is stopped by its own PID (`Child::kill`), never by name, and also on drop, so an
//! early return or a Ctrl-C leaves nothing behind.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// Clock ticks per second of the times in `/proc/<pid>/stat` (`USER_HZ`, 100 on every Linux architecture
/// mainstream enough to run this bench).
const USER_HZ: f64 = 100.0;

/// CPU time a process has used so far, user and system.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuTime {
    /// Seconds in user mode.
    pub user_s: f64,
    /// Seconds in kernel mode.
    pub sys_s: f64,
}

impl CpuTime {
    /// User plus system seconds.
    pub fn total_s(&self) -> f64 {
        self.user_s + self.sys_s
    }

    /// The CPU time used between `earlier` and `self`.
    pub fn since(&self, earlier: &CpuTime) -> CpuTime {
        CpuTime {
            user_s: (self.user_s - earlier.user_s).max(0.0),
            sys_s: (self.sys_s - earlier.sys_s).max(0.0),
        }
    }
}

/// Reads the user and system time of process `pid` from `/proc/<pid>/stat` (all threads included).
pub fn cpu_time(pid: u32) -> Option<CpuTime> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces: count fields after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so utime (field 14) and stime (field 15) are at 11 and 12 here.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some(CpuTime {
        user_s: utime / USER_HZ,
        sys_s: stime / USER_HZ,
    })
}

/// The whole machine's CPU counters from `/proc/stat`, seconds summed over all cores.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MachineCpu {
    /// Time not idle (user, nice, system, irq, softirq), all processes.
    pub busy_s: f64,
    /// Time the hypervisor gave to other guests while this one wanted to run.
    pub steal_s: f64,
}

impl MachineCpu {
    /// The counters used between `earlier` and `self`.
    pub fn since(&self, earlier: &MachineCpu) -> MachineCpu {
        MachineCpu {
            busy_s: (self.busy_s - earlier.busy_s).max(0.0),
            steal_s: (self.steal_s - earlier.steal_s).max(0.0),
        }
    }
}

/// Reads the aggregate `cpu` line of `/proc/stat`.
pub fn machine_cpu() -> Option<MachineCpu> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let field = |i: usize| v.get(i).copied().unwrap_or(0.0);
    Some(MachineCpu {
        busy_s: (field(0) + field(1) + field(2) + field(5) + field(6)) / USER_HZ,
        steal_s: field(7) / USER_HZ,
    })
}

/// A `kB` field of `/proc/<pid>/status`, such as `VmHWM` (peak resident set) or `VmRSS`.
pub fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let value = line.strip_prefix(field)?.strip_prefix(':')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// Resets the peak resident memory (`VmHWM`) of `pid` to its current resident memory, so that a later reading
/// is the peak since now (writing `5` to `/proc/<pid>/clear_refs`; Linux 4.0 and later). False when that failed
/// (not our process, an older kernel): the peak then covers the process's whole life.
pub fn reset_peak_rss(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// Whether `pid` is a `redis-server` (or `valkey-server`) visible in this machine's `/proc` (an external Redis reports its PID in
/// `INFO server`, but it may live in another PID namespace).
pub fn is_redis_server(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|comm| {
            let comm = comm.trim();
            comm.starts_with("redis-server") || comm.starts_with("valkey-server")
        })
        .unwrap_or(false)
}

/// One worker process (`redcall bench-worker ...`), talking JSON lines on stdout and taking `go` on stdin.
/// Closing its stdin tells it to finish; dropping the handle kills it by PID.
pub struct Worker {
    /// What it is, for messages (`redcall requester 0`).
    pub label: String,
    child: Child,
    pid: u32,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Worker {
    /// Spawns `current_exe` with `args`. Its stderr (warnings) goes to ours.
    pub fn spawn(label: String, args: &[String]) -> Result<Self, String> {
        let exe =
            std::env::current_exe().map_err(|e| format!("cannot find the redcall binary: {e}"))?;
        let mut child = Command::new(exe)
            .args(args)
            // Export only where the bench asks for it (`--otlp-endpoint` in `args` of the `redcall-otel` workers).
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start the {label}: {e}"))?;
        let pid = child
            .id()
            .ok_or_else(|| format!("the {label} exited at once"))?;
        let stdin = child.stdin.take();
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| format!("no stdout from the {label}"))?;
        Ok(Worker {
            label,
            child,
            pid,
            stdin,
            stdout: BufReader::new(stdout).lines(),
        })
    }

    /// The worker's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The next JSON event the worker printed; an error when it exited or printed something else.
    pub async fn next_event(&mut self) -> Result<serde_json::Value, String> {
        match self.stdout.next_line().await {
            Ok(Some(line)) => serde_json::from_str(&line)
                .map_err(|e| format!("the {} printed {line:?}: {e}", self.label)),
            Ok(None) => Err(format!("the {} exited unexpectedly", self.label)),
            Err(e) => Err(format!("reading from the {}: {e}", self.label)),
        }
    }

    /// Waits for an event whose `event` field is `name`, skipping others; at most `limit`.
    pub async fn expect(
        &mut self,
        name: &str,
        limit: Duration,
    ) -> Result<serde_json::Value, String> {
        let label = self.label.clone();
        let wait = async {
            loop {
                let event = self.next_event().await?;
                if event["event"] == name {
                    return Ok(event);
                }
            }
        };
        tokio::time::timeout(limit, wait)
            .await
            .map_err(|_| format!("the {label} did not report {name:?} within {limit:?}"))?
    }

    /// Sends one control line (`go`).
    pub async fn send(&mut self, line: &str) -> Result<(), String> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| format!("the {} has no stdin", self.label))?;
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .map_err(|e| format!("writing to the {}: {e}", self.label))?;
        stdin
            .flush()
            .await
            .map_err(|e| format!("writing to the {}: {e}", self.label))
    }

    /// Closes stdin (the worker finishes and exits), waits up to `grace`, then kills it by PID. Fails when the
    /// worker had to be killed or exited with an error (its message is on the bench's stderr, which it shares).
    pub async fn finish(mut self, grace: Duration) -> Result<(), String> {
        drop(self.stdin.take());
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => Err(format!("the {} exited with {status}", self.label)),
            Ok(Err(e)) => Err(format!("waiting for the {}: {e}", self.label)),
            Err(_) => {
                let _ = self.child.kill().await;
                Err(format!(
                    "the {} did not exit within {grace:?} and was killed",
                    self.label
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::{GlobalAlloc, Layout, System};

    /// Makes 64 MiB resident and gives it back to the kernel (the system allocator maps a block this large on
    /// its own and unmaps it when freed), so the peak stands well above what stays resident.
    fn touch_and_release_64_mib() {
        let layout = Layout::from_size_align(64 << 20, 4096).expect("layout");
        // SAFETY: the layout is non-zero; the block is written within its bounds, then freed with the same layout.
        unsafe {
            let block = System.alloc(layout);
            assert!(!block.is_null(), "64 MiB allocation failed");
            for offset in (0..layout.size()).step_by(4096) {
                block.add(offset).write_volatile(1);
            }
            System.dealloc(block, layout);
        }
    }

    #[test]
    fn peak_memory_resets_to_the_current_memory() {
        let me = std::process::id();
        touch_and_release_64_mib();
        let peak_before = status_kb(me, "VmHWM").expect("VmHWM");
        let resident_before = status_kb(me, "VmRSS").expect("VmRSS");
        assert!(
            peak_before > resident_before + 32 * 1024,
            "the test's own premise: peak {peak_before} kB, resident {resident_before} kB"
        );
        assert!(reset_peak_rss(me), "clear_refs refused for our own process");
        let peak = status_kb(me, "VmHWM").expect("VmHWM");
        let resident = status_kb(me, "VmRSS").expect("VmRSS");
        assert!(
            peak <= resident + 8 * 1024,
            "peak {peak} kB after the reset, resident {resident} kB (before: {peak_before} kB)"
        );
    }
}
