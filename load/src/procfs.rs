//! Server figures from /proc: resident memory and CPU time of the given pids.

use serde::Serialize;

/// One reading of one process.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ProcSample {
    pub pid: u32,
    /// VmRSS in bytes.
    pub rss_bytes: u64,
    /// Proportional set size in bytes (shared pages divided among the processes sharing them, so
    /// summing over nginx's workers does not count its shared memory zone twice); 0 if unknown.
    pub pss_bytes: u64,
    /// utime + stime in seconds.
    pub cpu_s: f64,
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// VmRSS (kB) from the text of /proc/PID/status, in bytes.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let v = l.strip_prefix("VmRSS:")?.trim();
        let kb: u64 = v.strip_suffix("kB").unwrap_or(v).trim().parse().ok()?;
        Some(kb * 1024)
    })
}

/// `Pss:` (kB) from the text of /proc/PID/smaps_rollup, in bytes.
pub fn parse_pss(smaps_rollup: &str) -> Option<u64> {
    smaps_rollup.lines().find_map(|l| {
        let v = l.strip_prefix("Pss:")?.trim();
        let kb: u64 = v.strip_suffix("kB").unwrap_or(v).trim().parse().ok()?;
        Some(kb * 1024)
    })
}

/// utime + stime (clock ticks) from the text of /proc/PID/stat (fields 14 and 15; the command
/// name in parentheses may contain spaces, so fields are counted after the last `)`).
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14 -> index 11, stime index 12.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

pub fn sample(pid: u32) -> Result<ProcSample, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("reading /proc/{pid}/status: {e}"))?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("reading /proc/{pid}/stat: {e}"))?;
    let pss_bytes = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|t| parse_pss(&t))
        .unwrap_or(0);
    Ok(ProcSample {
        pid,
        rss_bytes: parse_vm_rss(&status).ok_or_else(|| format!("no VmRSS for pid {pid}"))?,
        pss_bytes,
        cpu_s: parse_stat_ticks(&stat).ok_or_else(|| format!("bad /proc/{pid}/stat"))? as f64
            / ticks_per_second(),
    })
}

/// Sum over pids (None when no pid was given or one cannot be read).
pub fn sample_all(pids: &[u32]) -> Option<ProcSample> {
    if pids.is_empty() {
        return None;
    }
    let mut total = ProcSample::default();
    for &pid in pids {
        match sample(pid) {
            Ok(s) => {
                total.rss_bytes += s.rss_bytes;
                total.pss_bytes += s.pss_bytes;
                total.cpu_s += s.cpu_s;
            }
            Err(e) => {
                eprintln!("dashclaw-realtime-load: {e}");
                return None;
            }
        }
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_text() {
        assert_eq!(
            parse_vm_rss("Name:\tx\nVmRSS:\t   12345 kB\nVmSwap:\t0 kB\n"),
            Some(12345 * 1024)
        );
        assert_eq!(parse_vm_rss("Name: x\n"), None);
        assert_eq!(
            parse_pss("Rss:  900 kB\nPss:   700 kB\nPss_Anon: 600 kB\n"),
            Some(700 * 1024)
        );
        assert_eq!(parse_pss("Rss: 1 kB\n"), None);
        let stat = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 1000 1 1";
        assert_eq!(parse_stat_ticks(stat), Some(300));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn samples_this_process() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_bytes > 0);
        assert!(s.cpu_s >= 0.0);
    }
}
