//! `TCP_NODELAY` on this process's connections to the database.
//!
//! sqlx 0.9.0 stopped disabling Nagle's algorithm on its TCP sockets (upstream issue
//! transact-rs/sqlx#4335, fixed after 0.9.0). With Nagle on, a statement written in more than
//! one piece (any TLS statement over 16 KiB, a large batch, and small statements once the
//! server's delayed ACKs kick in) waits for an ACK the server delays by about 40 ms, which turns
//! a 2 ms append into a 45 ms one. sqlx does not hand out its sockets, so after each connection
//! is made we find the process's TCP sockets whose peer is the database's port and set the
//! option on them: `pidfd_getfd` duplicates a socket descriptor safely, and options set on the
//! duplicate apply to the shared socket. Best effort: a failure only costs latency, so it is
//! logged and ignored. Remove this module once the workspace uses a sqlx that sets the option.

/// Sets `TCP_NODELAY` on every TCP socket of this process connected to `port`; returns whether
/// there is such a socket and all of them now have the option, whoever set it. (Every new
/// connection of the process calls this, so a socket is often set by another connection's call
/// before its own: counting only the sockets a call changed would wrongly report a failure.)
#[cfg(target_os = "linux")]
pub(crate) fn disable_nagle(port: u16) -> bool {
    match linux::disable_nagle(port) {
        Ok(sockets) => sockets > 0,
        Err(error) => {
            tracing::debug!(%error, "cannot set TCP_NODELAY on the database connections");
            false
        }
    }
}

/// Elsewhere sqlx's sockets keep their defaults.
#[cfg(not(target_os = "linux"))]
pub(crate) fn disable_nagle(_port: u16) -> bool {
    false
}

#[cfg(target_os = "linux")]
mod linux {
    use std::{fs, io};

    use rustix::{
        net::{getpeername, sockopt},
        process::{PidfdFlags, PidfdGetfdFlags, getpid, pidfd_getfd, pidfd_open},
    };

    /// How many sockets to `port` there are, every one of them with `TCP_NODELAY` set.
    pub(super) fn disable_nagle(port: u16) -> io::Result<usize> {
        let me = pidfd_open(getpid(), PidfdFlags::empty())?;
        let mut sockets = 0;
        for entry in fs::read_dir("/proc/self/fd")? {
            let entry = entry?;
            let Some(fd) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            // Only sockets; a descriptor closed since the listing simply fails below.
            let is_socket = fs::read_link(entry.path())
                .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
            if !is_socket {
                continue;
            }
            let Ok(socket) = pidfd_getfd(&me, fd, PidfdGetfdFlags::empty()) else {
                continue;
            };
            let peer_port = match getpeername(&socket) {
                Ok(Some(peer)) => std::net::SocketAddr::try_from(peer).ok().map(|a| a.port()),
                _ => None,
            };
            if peer_port != Some(port) {
                continue;
            }
            if sockopt::tcp_nodelay(&socket) != Ok(true) {
                sockopt::set_tcp_nodelay(&socket, true)?;
            }
            sockets += 1;
        }
        Ok(sockets)
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::net::{TcpListener, TcpStream};

    use rustix::net::sockopt;

    #[test]
    fn sets_the_option_on_sockets_to_the_port_only() {
        let server = TcpListener::bind("127.0.0.1:0").expect("bind");
        let other = TcpListener::bind("127.0.0.1:0").expect("bind");
        let to_server = TcpStream::connect(server.local_addr().expect("addr")).expect("connect");
        let to_other = TcpStream::connect(other.local_addr().expect("addr")).expect("connect");
        assert_eq!(sockopt::tcp_nodelay(&to_server), Ok(false));
        let port = server.local_addr().expect("addr").port();
        assert!(super::disable_nagle(port));
        assert_eq!(sockopt::tcp_nodelay(&to_server), Ok(true));
        // A second call (another connection's) finds the option set and still reports success.
        assert!(super::disable_nagle(port), "already set counts as set");
        assert_eq!(
            sockopt::tcp_nodelay(&to_other),
            Ok(false),
            "other peers are left alone"
        );
    }
}
