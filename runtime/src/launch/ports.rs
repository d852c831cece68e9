//! Free loopback ports for processes started on one machine (`run
//! --local`, the benchmark harness, the end-to-end tests).
//!
//! A port is found by binding it and releasing it for the process that
//! will listen on it. Between the release and that bind, any outgoing TCP
//! connection on the machine may be given the same port as its local end
//! if the port lies in the kernel's ephemeral range
//! (`net.ipv4.ip_local_port_range`), which is where `bind(":0")` takes its
//! ports from. The segment then fails with "address in use". Ports are
//! therefore taken from below (or, failing room there, above) that range,
//! where the kernel never hands out ports on its own, starting at an offset
//! drawn from the process id and the clock so that concurrent callers
//! rarely probe the same ones.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// Lowest port handed out: below it lie well-known and registered
/// services more often run on development machines.
const FLOOR: u32 = 10_000;

/// The kernel's ephemeral port range, from procfs where there is one.
fn ephemeral_range() -> (u32, u32) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(str::parse::<u32>);
            match (it.next(), it.next()) {
                (Some(Ok(lo)), Some(Ok(hi))) if lo <= hi => Some((lo, hi)),
                _ => None,
            }
        })
        // Linux's default.
        .unwrap_or((32_768, 60_999))
}

/// The window ports are drawn from: `[start, start + len)`.
fn window() -> (u32, u32) {
    let (lo, hi) = ephemeral_range();
    let below = lo.saturating_sub(FLOOR);
    let above = 65_535u32.saturating_sub(hi);
    if below >= above {
        (FLOOR, below)
    } else {
        (hi + 1, above)
    }
}

/// Offset into the window of the next port to probe; `u32::MAX` until the
/// first call seeds it.
static NEXT_PORT: AtomicU32 = AtomicU32::new(u32::MAX);

/// A loopback port that was free a moment ago and lies outside the
/// ephemeral range (see the module docs); successive calls in one process
/// return different ports.
///
/// # Errors
/// When no port in the window can be bound and the kernel cannot give one
/// either.
pub fn free_loopback_port() -> std::io::Result<u16> {
    let (start, len) = window();
    if len > 0 {
        let seed = || {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            std::process::id().wrapping_mul(2_654_435_761) ^ nanos
        };
        let _ = NEXT_PORT.compare_exchange(
            u32::MAX,
            seed() % len,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        for _ in 0..len.min(4096) {
            let k = NEXT_PORT.fetch_add(1, Ordering::Relaxed) % len;
            let Ok(port) = u16::try_from(start + k) else {
                continue;
            };
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Ok(port);
            }
        }
    }
    // No room outside the ephemeral range: let the kernel pick.
    TcpListener::bind("127.0.0.1:0")?
        .local_addr()
        .map(|a| a.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_bindable_and_outside_the_ephemeral_range() {
        let (lo, hi) = ephemeral_range();
        let ports: Vec<u16> = (0..64)
            .map(|_| free_loopback_port().unwrap_or_else(|e| panic!("{e}")))
            .collect();
        let mut sorted = ports.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ports.len(), "{ports:?}");
        for &p in &ports {
            let p32 = u32::from(p);
            assert!(p32 < lo || p32 > hi, "{p} in {lo}..={hi}");
            assert!(TcpListener::bind(("127.0.0.1", p)).is_ok(), "{p}");
        }
    }

    #[test]
    fn a_port_held_by_a_listener_is_skipped() {
        let first = free_loopback_port().unwrap_or_else(|e| panic!("{e}"));
        // The port the next call would probe first, held by a listener.
        let (start, len) = window();
        let next = start + NEXT_PORT.load(Ordering::Relaxed) % len;
        let held = u16::try_from(next).unwrap_or_else(|e| panic!("{e}"));
        let _l = TcpListener::bind(("127.0.0.1", held)).unwrap_or_else(|e| panic!("{e}"));
        let p = free_loopback_port().unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(p, held);
        assert_ne!(p, first);
    }
}
