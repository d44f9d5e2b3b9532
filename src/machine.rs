//! What the machine and this process have: free memory (the least of the
//! system's, `ulimit -v` and a container's cgroup limit), CPU time and peak
//! resident memory. Read from Linux's /proc and /sys; elsewhere each answer
//! is `None`, and the checks that use them let the work go ahead.

use std::fs;

/// Memory this process can still take, in bytes: the least of the
/// system's available memory, the process's address-space limit
/// (`ulimit -v`) and its cgroup's limit (containers).
pub fn available_memory() -> Option<u64> {
    let read = |path: &str| fs::read_to_string(path).ok();
    let system = read("/proc/meminfo")
        .and_then(|t| field(&t, "MemAvailable:", 1))
        .map(|kb| kb * 1024);
    let address_space = read("/proc/self/limits").and_then(|t| field(&t, "Max address space", 3));
    let cgroup = read("/sys/fs/cgroup/memory.max")
        .and_then(|max| max.trim().parse::<u64>().ok())
        .map(|max| {
            let used = read("/sys/fs/cgroup/memory.current")
                .and_then(|c| c.trim().parse::<u64>().ok())
                .unwrap_or(0);
            max.saturating_sub(used)
        });
    [system, address_space, cgroup].into_iter().flatten().min()
}

/// User plus system CPU seconds of this process so far.
pub(crate) fn cpu_seconds() -> Option<f64> {
    let stat = fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // The kernel reports in USER_HZ, which is 100 on Linux's ABI.
    Some(ticks / 100.0)
}

/// Peak resident set size of this process (VmHWM) in MB.
pub(crate) fn peak_rss_mb() -> Option<f64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let kb = field(&status, "VmHWM:", 1)?;
    Some(kb as f64 / 1024.0)
}

/// The whitespace-separated word `index` of the first line of `text` that
/// starts with `key`, as a number: how /proc lays out its tables.
fn field(text: &str, key: &str, index: usize) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(index)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_tables_are_read_by_key_and_column() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max address space         3072000000           unlimited            bytes\n";
        assert_eq!(field(limits, "Max address space", 3), Some(3_072_000_000));
        assert_eq!(field(limits, "Max open files", 3), None);
        let status = "Name:\tx\nVmHWM:\t  137216 kB\n";
        assert_eq!(field(status, "VmHWM:", 1), Some(137_216));
        assert_eq!(
            field("Max address space unlimited", "Max address space", 3),
            None
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_is_measured_on_linux() {
        assert!(available_memory().is_some_and(|b| b > 1 << 20));
        assert!(peak_rss_mb().is_some_and(|mb| mb > 1.0));
        assert!(cpu_seconds().is_some_and(|s| s >= 0.0));
    }
}
