//! Linux facts the benchmark needs: a clock shared by every process, CPU time of this process
//! and its threads, another process's CPU and memory from /proc, the open-files limit, and
//! client sockets bound to a chosen loopback source address.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};

/// CLOCK_MONOTONIC in nanoseconds. The clock is system-wide, so a timestamp taken in one worker
/// process can be compared with one taken in another (or in the coordinator).
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sleeps (tokio timer) until the monotonic time `t_ns`; returns at once if it has passed.
pub async fn sleep_until_ns(t_ns: u64) {
    let now = mono_ns();
    if t_ns > now {
        tokio::time::sleep(Duration::from_nanos(t_ns - now)).await;
    }
}

fn rusage_ns(who: libc::c_int) -> u64 {
    // SAFETY: an all-zero rusage is a valid value to be overwritten by getrusage.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    if unsafe { libc::getrusage(who, &mut ru) } != 0 {
        return 0;
    }
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1_000;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// User + system CPU time of this whole process (all threads), in nanoseconds.
pub fn process_cpu_ns() -> u64 {
    rusage_ns(libc::RUSAGE_SELF)
}

/// User + system CPU time of the calling thread, in nanoseconds.
pub fn thread_cpu_ns() -> u64 {
    const RUSAGE_THREAD: libc::c_int = 1;
    rusage_ns(RUSAGE_THREAD)
}

/// Another process's resident memory (VmRSS) in KiB, from /proc/PID/status.
pub fn rss_kib(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .ok_or_else(|| io::Error::other(format!("no VmRSS in /proc/{pid}/status")))
}

/// Another process's utime + stime (all its threads) in nanoseconds, from /proc/PID/stat.
pub fn proc_cpu_ns(pid: u32) -> io::Result<u64> {
    proc_cpu_split_ns(pid).map(|(user, system)| user + system)
}

/// Another process's user and system (kernel) CPU time, nanoseconds, from /proc/PID/stat.
pub fn proc_cpu_split_ns(pid: u32) -> io::Result<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) is in parentheses and may contain spaces: count from after it.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| io::Error::other("unexpected /proc/PID/stat format"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime field 15.
    let ticks = |i: usize| -> io::Result<u64> {
        fields
            .get(i - 3)
            .and_then(|f| f.parse::<u64>().ok())
            .ok_or_else(|| io::Error::other("unexpected /proc/PID/stat format"))
    };
    let hz = clock_ticks_per_sec();
    Ok((
        ticks(14)? * 1_000_000_000 / hz,
        ticks(15)? * 1_000_000_000 / hz,
    ))
}

fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as u64
    } else {
        100
    }
}

/// Busy and total jiffies of the whole machine (first line of /proc/stat), to tell how much of
/// the machine other programs were using during a measurement.
pub fn machine_jiffies() -> io::Result<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat
        .lines()
        .next()
        .ok_or_else(|| io::Error::other("empty /proc/stat"))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = values.iter().take(8).sum();
    // idle + iowait
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    Ok((total - idle, total))
}

/// The kernel's count of connections dropped because a listening socket's accept queue was full
/// (TcpExt ListenOverflows in /proc/net/netstat, for this network namespace). Each one costs the
/// client a SYN retransmission, a second or more.
pub fn listen_overflows() -> io::Result<u64> {
    let text = std::fs::read_to_string("/proc/net/netstat")?;
    let mut lines = text.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        if !names.starts_with("TcpExt:") {
            continue;
        }
        let index = names
            .split_whitespace()
            .position(|n| n == "ListenOverflows");
        if let Some(value) = index.and_then(|i| values.split_whitespace().nth(i)) {
            return value.parse().map_err(io::Error::other);
        }
    }
    Err(io::Error::other(
        "no TcpExt ListenOverflows in /proc/net/netstat",
    ))
}

/// Number of CPUs this process may run on.
pub fn nproc() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Raises the soft RLIMIT_NOFILE to the hard limit and returns the new soft limit. Children
/// started afterwards (servers, workers) inherit it.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: `lim` is a valid rlimit; raising the soft limit up to the hard one is allowed.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(lim.rlim_cur)
}

/// A CLOCK_MONOTONIC timerfd driven by the tokio reactor: sleeps to an absolute deadline with
/// the kernel's high-resolution timer (no timer slack, no millisecond rounding as with tokio's
/// own timer), on the runtime's thread, so a paced sender needs no extra thread.
pub struct MonoTimer {
    fd: tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>,
}

impl MonoTimer {
    pub fn new() -> io::Result<Self> {
        use std::os::fd::FromRawFd;
        // SAFETY: plain syscall; the fd is checked and then owned by OwnedFd.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh, valid descriptor that nothing else owns.
        let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        // SAFETY: an OwnedFd always reports the descriptor it owns, which stays open until the
        // AsyncFd (its owner) is dropped.
        let fd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(owned, tokio::io::Interest::READABLE)
        }
        .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(Self { fd })
    }

    /// Returns at (or just after) the monotonic time `t_ns`; at once if it has passed.
    pub async fn sleep_until_ns(&self, t_ns: u64) -> io::Result<()> {
        if t_ns <= mono_ns() {
            return Ok(());
        }
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (t_ns / 1_000_000_000) as libc::time_t,
                tv_nsec: (t_ns % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: valid timerfd and itimerspec; the old value is not asked for.
        let rc = unsafe {
            libc::timerfd_settime(
                self.fd.as_raw_fd(),
                libc::TFD_TIMER_ABSTIME,
                &spec,
                std::ptr::null_mut(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        loop {
            let mut guard = self.fd.readable().await?;
            let read = guard.try_io(|fd| {
                let mut expirations = [0u8; 8];
                // SAFETY: reading 8 bytes into an 8-byte buffer from a valid fd.
                let n = unsafe { libc::read(fd.as_raw_fd(), expirations.as_mut_ptr().cast(), 8) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(())
                }
            });
            match read {
                Ok(result) => return result,
                // Spurious readiness: wait again.
                Err(_would_block) => continue,
            }
        }
    }
}

/// Asks the kernel to send SIGKILL to the calling process when its parent thread exits. Meant
/// for `Command::pre_exec`: a benchmark child must not outlive the benchmark, even if the
/// benchmark itself is killed before its drop guards can run.
pub fn die_with_parent() -> io::Result<()> {
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and only sets an attribute.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Connects to `to` from `source` (a loopback address such as 127.0.0.2). Spreading source
/// addresses multiplies the ephemeral ports available towards one server port.
/// `IP_BIND_ADDRESS_NO_PORT` lets the kernel pick the source port at connect time, by the full
/// 4-tuple, instead of reserving one at bind time.
pub async fn connect_from(source: Ipv4Addr, to: SocketAddr) -> io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if source != Ipv4Addr::LOCALHOST {
        let one: libc::c_int = 1;
        // SAFETY: valid fd, option value points to a c_int of the stated size.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        socket.bind(SocketAddr::V4(SocketAddrV4::new(source, 0)))?;
    }
    let stream = socket.connect(to).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mono_timer_wakes_at_its_deadline() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let timer = MonoTimer::new().unwrap();
            for _ in 0..3 {
                let deadline = mono_ns() + 300_000;
                timer.sleep_until_ns(deadline).await.unwrap();
                let late = mono_ns() - deadline;
                assert!(mono_ns() >= deadline);
                assert!(late < 50_000_000, "woke {late} ns late");
            }
            // A deadline in the past returns at once.
            timer.sleep_until_ns(1).await.unwrap();
        });
    }

    #[test]
    fn proc_readings_of_this_process_are_plausible() {
        let pid = std::process::id();
        assert!(rss_kib(pid).unwrap() > 100);
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(proc_cpu_ns(pid).is_ok());
        assert!(process_cpu_ns() > 0);
        let (busy, total) = machine_jiffies().unwrap();
        assert!(busy <= total && total > 0);
        assert!(listen_overflows().is_ok());
        let a = mono_ns();
        std::thread::sleep(Duration::from_millis(2));
        assert!(mono_ns() - a >= 2_000_000);
    }
}
