//! The I/O settings: which backend moves datagrams and how, fixed for the server's life.

use super::ConfigError;

/// Which I/O backend the workers run on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IoBackend {
    /// io_uring when the start-up probe says it works, epoll otherwise.
    #[default]
    Auto,
    /// io_uring; fail to start if it is unusable.
    Uring,
    /// epoll.
    Epoll,
}

/// The default [`IoConfig::max_transfers`]: 65,536 transfers over the whole server. A PXE fleet
/// booting at once is thousands of machines, each with one or two transfers open; 65,536 leaves
/// room for that many times over, while its sockets (one descriptor each) stay within the
/// `LimitNOFILE=524288` systemd gives services, and the tables stay a few MiB whatever the
/// number of CPUs (it was 16,384 per worker before: over a million on a 64-core machine).
pub const DEFAULT_MAX_TRANSFERS: usize = 65536;

/// How the workers move datagrams: the settings that cannot change while the server runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoConfig {
    /// The backend.
    pub backend: IoBackend,
    /// Send runs of DATA as one send that the kernel cuts into datagrams (UDP GSO), where the
    /// kernel has it.
    pub gso: bool,
    /// Receive buffer of each listening socket, in bytes.
    pub recv_buffer: usize,
    /// io_uring submission queue entries per worker (at least 64).
    pub ring_entries: u32,
    /// Receive buffers per worker in the io_uring provided-buffer ring (a power of two in
    /// 16..=32768).
    pub rx_buffers: u32,
    /// Sends in flight per worker on io_uring (at least 16).
    pub send_slots: u32,
    /// Serve every transfer from the listening port instead of a new port per transfer.
    pub single_port: bool,
    /// Ports for transfers, inclusive; `None`: any free port the kernel picks.
    pub port_range: Option<(u16, u16)>,
    /// With [`single_port`](Self::single_port) or [`port_range`](Self::port_range), where a
    /// forger can predict the transfer ID: the bytes of DATA a read sends before its client
    /// acknowledges a block, which also caps the window and blksize it is granted
    /// ([`BLIND_BUDGET`](super::BLIND_BUDGET) by default; at least 516, one DATA of 512 bytes).
    pub blind_budget: u32,
    /// Transfers in progress over the whole server (dnsmasq's `--tftp-max`), divided evenly
    /// among the workers at start (each holds at least one); a request beyond its worker's
    /// share gets ERROR 0 "server busy". Each transfer holds a socket in the default mode, so
    /// the start also holds each worker below what the descriptor limit allows.
    pub max_transfers: usize,
}

impl Default for IoConfig {
    fn default() -> Self {
        Self {
            backend: IoBackend::Auto,
            gso: true,
            recv_buffer: 8 << 20,
            ring_entries: 4096,
            rx_buffers: 1024,
            send_slots: 2048,
            single_port: false,
            port_range: None,
            blind_budget: super::BLIND_BUDGET,
            max_transfers: DEFAULT_MAX_TRANSFERS,
        }
    }
}

impl IoConfig {
    /// The blind budget in force with these port settings: [`blind_budget`](Self::blind_budget)
    /// where a forger can predict transfer IDs (one listening port, or ports from a range),
    /// else none.
    pub fn blind_budget_in_force(&self) -> Option<u32> {
        (self.single_port || self.port_range.is_some()).then_some(self.blind_budget)
    }
}

impl IoConfig {
    /// Refuses sizes the backends cannot work with.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_transfers == 0 {
            return Err(ConfigError::MaxTransfers);
        }
        if !self.rx_buffers.is_power_of_two() || !(16..=32768).contains(&self.rx_buffers) {
            return Err(ConfigError::RxBuffers);
        }
        if self.ring_entries < 64 || self.send_slots < 16 {
            return Err(ConfigError::RingSize);
        }
        Ok(())
    }
}
