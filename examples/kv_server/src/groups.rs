//! Commands a connection's shard sends to other shards: one group per shard for
//! each read's worth of pipelined requests, one submit per target shard for all the
//! groups posted in a loop iteration, and the replies.
//!
//! A reply that goes straight to the client is encoded on the shard that owns the
//! key, into one buffer per group (`Store::execute_into`: no `Reply` value, no copy
//! of the value in between); the connection copies those bytes into its output. A
//! reply that is merged with others (a part of a split command) comes back as a
//! `Reply`.

use std::cell::RefCell;
use std::future::poll_fn;
use std::ops::Range;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Instant;

use kv_server::kv::Command;
use kv_server::resp::{Protocol, Reply};
use shardloop::Runtime;

use crate::txn::{self, shutting_down};
use crate::STORE;

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

    /// Sends every group to its shard and waits for the replies. Groups are not sent
    /// at once: every group this shard's connections post in one loop iteration goes
    /// to its shard in one message (see [`post`]), which runs them in order, each
    /// once no transaction holds a key of it.
    pub async fn send(self, rt: &Arc<Runtime>) -> Replies {
        let answers: Vec<Option<Rc<Answer>>> = self
            .per_shard
            .into_iter()
            .enumerate()
            .map(|(shard, cmds)| (!cmds.is_empty()).then(|| post(rt, shard, cmds)))
            .collect();
        let mut per_shard = Vec::with_capacity(answers.len());
        for answer in answers {
            per_shard.push(match answer {
                None => (Vec::new(), Vec::new()),
                Some(answer) => match answer.wait().await {
                    Some((bytes, outs)) => (bytes, outs.into_iter().map(Some).collect()),
                    // The shard is shutting down: each of its replies is an error.
                    None => (Vec::new(), Vec::new()),
                },
            });
        }
        Replies { per_shard }
    }
}

thread_local! {
    /// Groups this shard's connections posted that are not sent yet.
    static OUTBOX: RefCell<Outbox> = RefCell::new(Outbox::default());
}

/// One group's commands, and where its replies go.
type Posted = (Vec<(Command, Want)>, Rc<Answer>);

/// A group's replies: the bytes of those that came back encoded, and each reply.
type GroupReplies = (Vec<u8>, Vec<Out>);

#[derive(Default)]
struct Outbox {
    /// Indexed by target shard.
    per_shard: Vec<Vec<Posted>>,
    /// A flush is queued on this shard's loop.
    flush_queued: bool,
}

/// Queues a group for `shard` and, if none is queued yet, a flush at the end of
/// this loop iteration (`call_soon`: after the connections already woken in it,
/// which may post groups too). One message per target shard then carries them all,
/// instead of one per connection: fewer jobs to box, send and spawn on both sides.
fn post(rt: &Arc<Runtime>, shard: usize, cmds: Vec<(Command, Want)>) -> Rc<Answer> {
    let answer = Rc::new(Answer::default());
    let schedule = OUTBOX.with(|o| {
        let mut o = o.borrow_mut();
        if o.per_shard.len() < rt.len() {
            o.per_shard.resize_with(rt.len(), Vec::new);
        }
        o.per_shard[shard].push((cmds, answer.clone()));
        !std::mem::replace(&mut o.flush_queued, true)
    });
    if schedule {
        let flusher = rt.clone();
        let queued =
            shardloop::get_event_loop().and_then(|lp| lp.call_soon(move || flush(&flusher)));
        if queued.is_err() {
            // The loop is closing (no flush, nor the task it needs, can run): what
            // is posted is answered with "shutting down".
            let posted = OUTBOX.with(|o| std::mem::take(&mut *o.borrow_mut()));
            for (_, answer) in posted.per_shard.into_iter().flatten() {
                answer.set(None);
            }
        }
    }
    answer
}

/// Sends every posted group, one message per target shard, and hands each group's
/// replies to its connection as they come back.
fn flush(rt: &Arc<Runtime>) {
    let per_shard = OUTBOX.with(|o| {
        let mut o = o.borrow_mut();
        o.flush_queued = false;
        std::mem::take(&mut o.per_shard)
    });
    for (shard, posted) in per_shard.into_iter().enumerate() {
        if posted.is_empty() {
            continue;
        }
        let (groups, answers): (Vec<_>, Vec<_>) = posted.into_iter().unzip();
        let remote = rt.submit_to(shard, move || async move {
            // The groups are of different connections, so nothing orders them: the
            // ones a transaction holds no key of run now, the others after, each
            // once its keys are free (never half-way through a transaction).
            let mut results: Vec<Option<GroupReplies>> = Vec::with_capacity(groups.len());
            let mut blocked = Vec::new();
            let now = Instant::now();
            for (i, cmds) in groups.into_iter().enumerate() {
                if cmds.iter().any(|(c, _)| txn::blocks(c)) {
                    results.push(None);
                    blocked.push((i, cmds));
                } else {
                    results.push(Some(
                        STORE.with(|s| run_group(&mut s.borrow_mut(), cmds, now)),
                    ));
                }
            }
            for (i, cmds) in blocked {
                txn::until_free(cmds.iter().map(|(c, _)| c)).await;
                let now = Instant::now();
                results[i] = Some(STORE.with(|s| run_group(&mut s.borrow_mut(), cmds, now)));
            }
            results
        });
        let mut answers = Unanswered(answers);
        drop(shardloop::spawn(async move {
            if let Ok(results) = remote.await {
                for (answer, result) in answers.0.drain(..).zip(results) {
                    answer.set(result);
                }
            }
        }));
    }
}

/// Answers still owed; dropped (also when the task carrying them is cancelled),
/// each is answered with `None`, so no connection waits forever.
struct Unanswered(Vec<Rc<Answer>>);

impl Drop for Unanswered {
    fn drop(&mut self) {
        for answer in self.0.drain(..) {
            answer.set(None);
        }
    }
}

/// One group's replies, once its shard ran it (`None` inside: it could not).
#[derive(Default)]
struct Answer {
    result: RefCell<Option<Option<GroupReplies>>>,
    waker: RefCell<Option<Waker>>,
}

impl Answer {
    fn set(&self, result: Option<GroupReplies>) {
        *self.result.borrow_mut() = Some(result);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    async fn wait(&self) -> Option<GroupReplies> {
        poll_fn(|cx| match self.result.take() {
            Some(result) => Poll::Ready(result),
            None => {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

fn run_group(
    store: &mut kv_server::kv::Store,
    cmds: Vec<(Command, Want)>,
    now: Instant,
) -> GroupReplies {
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
