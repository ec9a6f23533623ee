//! Whether a descriptor is a listening socket (`SO_ACCEPTCONN`): what a server's
//! [`ServerSocket`](shardloop::net::ServerSocket) handle must lead to.

use std::os::fd::RawFd;

pub fn is_listening(fd: RawFd) -> bool {
    let mut on: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `on` and `len` are live locals of the sizes passed; getsockopt only
    // writes into them, and a bad descriptor is an error return, not UB.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&mut on as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    rc == 0 && on == 1
}
