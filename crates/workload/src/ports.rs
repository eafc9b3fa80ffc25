//! Loopback ports for processes that must know each other's addresses before any of them
//! listens: a Raft group's members, a site's nodes, a broker started as a child process.
//!
//! Asking the kernel for port 0 and releasing it is racy on a busy machine: the kernel hands the
//! same ephemeral range to every `bind(0)` and every outgoing connection, so by the time the
//! member listens, another test's mock broker or client may hold the port (seen in CI as
//! "Address already in use" from a demo's Raft endpoint). Ports here come from below the
//! ephemeral range instead, where the kernel never assigns one by itself, chosen at random and
//! reserved across processes by an exclusive lock on a file per port in the temp directory,
//! held until this process exits. A port is handed out only when it can be bound at that moment.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rand::Rng;

/// The lowest port handed out (below it: well-known and registered services' habits).
const LOWEST: u16 = 10_000;
/// Fewer candidate ports than this below the ephemeral range: fall back to the kernel's choice.
const SMALLEST_RANGE: u16 = 1_000;
/// How many random candidates are tried before giving up.
const ATTEMPTS: usize = 500;

/// Ports this process reserved, with the lock files that reserve them.
static RESERVED: Mutex<Option<Reserved>> = Mutex::new(None);

#[derive(Default)]
struct Reserved {
    ports: HashSet<u16>,
    locks: Vec<File>,
}

/// A loopback port that nothing listens on now and that no other caller of this function, in
/// this or another process, is handed while this process lives.
pub fn spare_loopback_port() -> io::Result<u16> {
    let Some(highest) = ephemeral_low().checked_sub(1).filter(|h| *h >= LOWEST + SMALLEST_RANGE) else {
        return kernel_port();
    };
    let dir = std::env::temp_dir().join("tessera-ports");
    std::fs::create_dir_all(&dir)?;
    let mut reserved = RESERVED.lock().unwrap_or_else(|e| e.into_inner());
    let reserved = reserved.get_or_insert_with(Reserved::default);
    let mut rng = rand::rng();
    for _ in 0..ATTEMPTS {
        let port = rng.random_range(LOWEST..=highest);
        if reserved.ports.contains(&port) {
            continue;
        }
        let Some(lock) = try_reserve(&lock_path(&dir, port))? else { continue };
        if TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue; // someone outside this scheme listens there; the lock is dropped
        }
        reserved.ports.insert(port);
        reserved.locks.push(lock);
        return Ok(port);
    }
    Err(io::Error::new(
        io::ErrorKind::AddrNotAvailable,
        format!("no spare loopback port in {LOWEST}..={highest} after {ATTEMPTS} tries"),
    ))
}

fn lock_path(dir: &Path, port: u16) -> PathBuf {
    dir.join(format!("{port}.lock"))
}

/// The lock on `path` if no other process holds it.
fn try_reserve(path: &Path) -> io::Result<Option<File>> {
    let file = OpenOptions::new().create(true).truncate(false).write(true).open(path)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// The first port of the kernel's ephemeral range (Linux's default when it cannot be read).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|low| low.parse().ok()))
        .unwrap_or(32_768)
}

/// The kernel's choice (bound and released): racy, used only where no range is left below.
fn kernel_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_below_the_ephemeral_range_and_bindable() {
        let ports: Vec<u16> = (0..50).map(|_| spare_loopback_port().expect("a port")).collect();
        let distinct: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "a port handed out twice: {ports:?}");
        for p in &ports {
            assert!(*p >= LOWEST && *p < ephemeral_low(), "{p} outside the spare range");
            TcpListener::bind(("127.0.0.1", *p)).expect("a handed-out port can be bound");
        }
    }

    #[test]
    fn a_port_locked_by_someone_else_is_not_handed_out() {
        let dir = std::env::temp_dir().join("tessera-ports");
        let port = spare_loopback_port().expect("a port");
        // Another open file description of the same lock file cannot take the lock while this
        // process holds it, as another process could not.
        assert!(try_reserve(&lock_path(&dir, port)).expect("open").is_none());
    }
}
