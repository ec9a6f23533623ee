//! Name resolution that never blocks the loop: [`lookup_host`] and the
//! [`ToSocketAddrs`] trait that `TcpStream::connect` and the UDP calls take.
//!
//! An address that is already numeric (a `SocketAddr`, an `(IpAddr, u16)`, or a
//! string that parses as one) is used as it is, with no thread and no allocation:
//! asyncio's `_ipaddr_info` shortcut. Anything else is a host name, and the system
//! resolver (`getaddrinfo`, which blocks) runs on the loop's default executor
//! ([`EventLoop::run_in_executor`](crate::EventLoop::run_in_executor)), as asyncio's
//! `loop.getaddrinfo` does.

use std::fmt;
use std::io;
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6,
    ToSocketAddrs as _,
};
use std::sync::Arc;

/// Something that names one or more socket addresses: what
/// [`TcpStream::connect`](super::TcpStream::connect),
/// [`UdpSocket::connect`](super::UdpSocket::connect),
/// [`UdpSocket::send_to`](super::UdpSocket::send_to) and [`lookup_host`] take.
///
/// It is implemented for the same types as [`std::net::ToSocketAddrs`]
/// (`SocketAddr`, `SocketAddrV4`, `SocketAddrV6`, `(IpAddr, u16)`, `(Ipv4Addr, u16)`,
/// `(Ipv6Addr, u16)`, `(&str, u16)`, `(String, u16)`, `&str`, `String`,
/// `&[SocketAddr]`, and references to them), so calls written for std compile
/// unchanged; but a host name among them is resolved on the loop's executor
/// instead of blocking the loop thread. The trait is sealed: its one method is
/// private to shardloop.
///
/// ```
/// use shardloop::net::{lookup_host, ToSocketAddrs};
/// async fn first(addr: impl ToSocketAddrs) -> std::io::Result<std::net::SocketAddr> {
///     Ok(lookup_host(addr).await?[0])
/// }
/// let a = shardloop::run(first(("127.0.0.1", 80)))??;
/// assert_eq!(a, "127.0.0.1:80".parse().unwrap());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait ToSocketAddrs: sealed::Sealed {}

pub(crate) mod sealed {
    use super::Resolution;

    /// How a [`ToSocketAddrs`](super::ToSocketAddrs) type says what it names.
    pub trait Sealed {
        /// The addresses, or the name to look up.
        fn resolution(&self) -> Resolution;
    }
}

/// What an address argument needs before a socket can use it.
pub enum Resolution {
    /// Numeric already: no lookup.
    Ready(Addrs),
    /// A host name: the system resolver must look it up.
    Lookup(HostName),
}

/// A host name to look up, with its port, or as one `"host:port"` string (whose
/// port std's parser splits off).
pub struct HostName {
    host: String,
    port: Option<u16>,
}

impl HostName {
    /// The system resolver's answer (blocks: run it on the executor).
    fn lookup(&self) -> io::Result<Vec<SocketAddr>> {
        let addrs = match self.port {
            Some(port) => (self.host.as_str(), port).to_socket_addrs()?,
            None => self.host.as_str().to_socket_addrs()?,
        };
        Ok(addrs.collect())
    }
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}:{port}", self.host),
            None => f.write_str(&self.host),
        }
    }
}

/// Socket addresses known without a lookup, in order: one (no allocation), or a list.
pub enum Addrs {
    /// A single address (taken by the first `next`).
    One(Option<SocketAddr>),
    /// Several, from a slice or a lookup.
    Many(std::vec::IntoIter<SocketAddr>),
}

impl Iterator for Addrs {
    type Item = SocketAddr;

    fn next(&mut self) -> Option<SocketAddr> {
        match self {
            Addrs::One(a) => a.take(),
            Addrs::Many(it) => it.next(),
        }
    }
}

fn one(addr: impl Into<SocketAddr>) -> Resolution {
    Resolution::Ready(Addrs::One(Some(addr.into())))
}

/// Implements the trait for types that are numeric by construction.
macro_rules! numeric {
    ($($ty:ty),*) => {$(
        impl sealed::Sealed for $ty {
            fn resolution(&self) -> Resolution {
                one(*self)
            }
        }
        impl ToSocketAddrs for $ty {}
    )*};
}

numeric!(
    SocketAddr,
    SocketAddrV4,
    SocketAddrV6,
    (IpAddr, u16),
    (Ipv4Addr, u16),
    (Ipv6Addr, u16)
);

impl sealed::Sealed for str {
    fn resolution(&self) -> Resolution {
        match self.parse::<SocketAddr>() {
            Ok(addr) => one(addr),
            Err(_) => Resolution::Lookup(HostName {
                host: self.to_owned(),
                port: None,
            }),
        }
    }
}
impl ToSocketAddrs for str {}

impl sealed::Sealed for String {
    fn resolution(&self) -> Resolution {
        self.as_str().resolution()
    }
}
impl ToSocketAddrs for String {}

impl sealed::Sealed for (&str, u16) {
    fn resolution(&self) -> Resolution {
        let (host, port) = *self;
        match host.parse::<IpAddr>() {
            Ok(ip) => one((ip, port)),
            Err(_) => Resolution::Lookup(HostName {
                host: host.to_owned(),
                port: Some(port),
            }),
        }
    }
}
impl ToSocketAddrs for (&str, u16) {}

impl sealed::Sealed for (String, u16) {
    fn resolution(&self) -> Resolution {
        (self.0.as_str(), self.1).resolution()
    }
}
impl ToSocketAddrs for (String, u16) {}

impl sealed::Sealed for [SocketAddr] {
    fn resolution(&self) -> Resolution {
        Resolution::Ready(Addrs::Many(Vec::from(self).into_iter()))
    }
}
impl ToSocketAddrs for [SocketAddr] {}

impl<T: sealed::Sealed + ?Sized> sealed::Sealed for &T {
    fn resolution(&self) -> Resolution {
        (**self).resolution()
    }
}
impl<T: ToSocketAddrs + ?Sized> ToSocketAddrs for &T {}

/// Resolves `host` to its socket addresses (asyncio's `loop.getaddrinfo`, and
/// tokio's `lookup_host`), without blocking the loop.
///
/// A numeric address comes back at once (no thread, no system call). A host name
/// (`"localhost:80"`, `("example.com", 443)`) is resolved by the system resolver on
/// the default executor of this thread's loop (the running loop, or the one set with
/// [`set_event_loop`](crate::set_event_loop)); meanwhile the loop runs other work. A
/// name that does not resolve is an `io::Error` that names it; so is a lookup with
/// no loop, or after the loop's executor was shut down.
///
/// ```
/// shardloop::run(async {
///     let addrs = shardloop::net::lookup_host("localhost:80").await?;
///     assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 80));
///     let numeric = shardloop::net::lookup_host("10.0.0.1:53").await?;
///     assert_eq!(numeric, ["10.0.0.1:53".parse().unwrap()]);
///     std::io::Result::Ok(())
/// })??;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub async fn lookup_host(host: impl ToSocketAddrs) -> io::Result<Vec<SocketAddr>> {
    Ok(resolve(&host).await?.collect())
}

/// The addresses `addr` names: at once when numeric, from the executor otherwise.
pub(crate) async fn resolve(addr: &(impl ToSocketAddrs + ?Sized)) -> io::Result<Addrs> {
    let name = match sealed::Sealed::resolution(addr) {
        Resolution::Ready(addrs) => return Ok(addrs),
        Resolution::Lookup(name) => Arc::new(name),
    };
    let failed = |kind: io::ErrorKind, why: &dyn fmt::Display| {
        io::Error::new(kind, format!("cannot resolve \"{name}\": {why}"))
    };
    let lp = crate::get_event_loop().map_err(|e| failed(io::ErrorKind::Other, &e))?;
    let lookup = lp.run_in_executor({
        let name = name.clone();
        move || name.lookup()
    });
    match lookup.await {
        Ok(Ok(addrs)) => Ok(Addrs::Many(addrs.into_iter())),
        Ok(Err(e)) => Err(failed(e.kind(), &e)),
        Err(e) => Err(failed(
            io::ErrorKind::Other,
            &format_args!("the loop's executor did not run the lookup ({e})"),
        )),
    }
}
