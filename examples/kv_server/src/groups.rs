//! Commands a connection's shard sends to other shards: one group per shard for
//! each read's worth of pipelined requests, one submit per group, and the replies.
//!
//! A reply that goes straight to the client is encoded on the shard that owns the
//! key, into one buffer per group (`Store::execute_into`: no `Reply` value, no copy
//! of the value in between); the connection copies those bytes into its output. A
//! reply that is merged with others (a part of a split command) comes back as a
//! `Reply`.

use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use kv_server::kv::Command;
use kv_server::resp::{Protocol, Reply};
use shardloop::Runtime;

use crate::{txn, STORE};

/// Room for this many commands is made for a shard's group at its first command
/// (a typical pipeline's depth), rather than growing 1, 2, 4, 8, 16.
const GROUP_ROOM: usize = 16;

/// How a command's reply comes back: as bytes in this protocol, or as a `Reply`.
type Want = Option<Protocol>;

/// One reply of a group.
enum Out {
    /// Its bytes, in the group's buffer.
    Bytes(Range<usize>),
    Reply(Reply),
}

/// The commands for other shards, indexed by shard (empty until the first one).
#[derive(Default)]
pub struct Groups {
    per_shard: Vec<Vec<(Command, Want)>>,
}

impl Groups {
    /// Adds `cmd` to shard `shard`'s group (of `shards`); its reply will be bytes in
    /// `proto`, or a `Reply` without one. Returns its index in the group.
    pub fn add(&mut self, shards: usize, shard: usize, cmd: Command, proto: Want) -> usize {
        if self.per_shard.is_empty() {
            self.per_shard.resize_with(shards, Vec::new);
        }
        let group = &mut self.per_shard[shard];
        if group.capacity() == 0 {
            group.reserve(GROUP_ROOM);
        }
        group.push((cmd, proto));
        group.len() - 1
    }

    /// Sends every group to its shard (which runs it once no transaction holds a
    /// key of it) and waits for the replies.
    pub async fn send(self, rt: &Arc<Runtime>) -> Replies {
        let submitted: Vec<_> = self
            .per_shard
            .into_iter()
            .enumerate()
            .map(|(shard, cmds)| {
                (!cmds.is_empty()).then(|| {
                    rt.submit_to(shard, move || async move {
                        // Never half-way through another connection's transaction.
                        txn::until_free(cmds.iter().map(|(c, _)| c)).await;
                        let now = Instant::now();
                        STORE.with(|s| run_group(&mut s.borrow_mut(), cmds, now))
                    })
                })
            })
            .collect();
        let mut per_shard = Vec::with_capacity(submitted.len());
        for group in submitted {
            per_shard.push(match group {
                None => (Vec::new(), Vec::new()),
                Some(remote) => match remote.await {
                    Ok((bytes, outs)) => (bytes, outs.into_iter().map(Some).collect()),
                    // The shard is shutting down: each of its replies is an error.
                    Err(_) => (Vec::new(), Vec::new()),
                },
            });
        }
        Replies { per_shard }
    }
}

fn run_group(
    store: &mut kv_server::kv::Store,
    cmds: Vec<(Command, Want)>,
    now: Instant,
) -> (Vec<u8>, Vec<Out>) {
    let mut bytes = Vec::new();
    let outs = cmds
        .into_iter()
        .map(|(cmd, want)| match want {
            Some(proto) => {
                let start = bytes.len();
                store.execute_into(cmd, now, proto, &mut bytes);
                Out::Bytes(start..bytes.len())
            }
            None => Out::Reply(store.execute(cmd, now)),
        })
        .collect();
    (bytes, outs)
}

/// The replies of every group, taken out one by one.
pub struct Replies {
    per_shard: Vec<(Vec<u8>, Vec<Option<Out>>)>,
}

fn shutting_down() -> Reply {
    Reply::error("ERR the shard owning this key is shutting down")
}

impl Replies {
    fn take(&mut self, shard: usize, idx: usize) -> Option<Out> {
        self.per_shard.get_mut(shard)?.1.get_mut(idx)?.take()
    }

    /// Reply `idx` of shard `shard`'s group, as a `Reply`.
    pub fn reply(&mut self, shard: usize, idx: usize) -> Reply {
        match self.take(shard, idx) {
            Some(Out::Reply(reply)) => reply,
            _ => shutting_down(),
        }
    }

    /// Appends reply `idx` of shard `shard`'s group to `out` (written in `proto`
    /// when it did not come back as bytes already).
    pub fn write(&mut self, shard: usize, idx: usize, proto: Protocol, out: &mut Vec<u8>) {
        match self.take(shard, idx) {
            Some(Out::Bytes(range)) => out.extend_from_slice(&self.per_shard[shard].0[range]),
            Some(Out::Reply(reply)) => reply.encode_as(out, proto),
            None => shutting_down().encode_as(out, proto),
        }
    }
}
