//! The connection whose effective settings we audit. sshd applies `Match`
//! blocks per connection, so an effective configuration is always the one
//! for a given connection: [`AUDITED_CONNECTION`] is the question both the
//! `sshd -T -C` path and our own `Match` evaluation answer.

/// The connection whose effective settings we audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connection {
    pub user: &'static str,
    pub host: &'static str,
    pub addr: &'static str,
    pub laddr: &'static str,
    pub lport: u16,
}

/// The connection an attacker on the internet would make: as `root` (the
/// account worth most), from a public address that no "trusted admin
/// network" `Match Address` block covers (203.0.113.10 is TEST-NET-3, never
/// routed, so it cannot accidentally be a real allowed peer), to port 22 on
/// any local address. `Match` blocks that relax settings for internal
/// networks or other users rightly do not apply to it. The same constant
/// drives `sshd -T -C` and our own `Match` evaluation, so both paths answer
/// the same question.
pub const AUDITED_CONNECTION: Connection =
    Connection { user: "root", host: "kosmos-audit.invalid", addr: "203.0.113.10", laddr: "0.0.0.0", lport: 22 };

impl Connection {
    /// The `-C` connection specification of `sshd -T`.
    pub fn spec(&self) -> String {
        format!("user={},host={},addr={},laddr={},lport={}", self.user, self.host, self.addr, self.laddr, self.lport)
    }
}
