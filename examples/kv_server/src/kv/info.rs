//! The `INFO` reply: sections of `name:value` lines, some supplied by the server.

use std::fmt::Display;

use super::ShardStats;
use crate::resp::Reply;

/// Builds the `INFO` reply. **A building block of the `kv_server` example.**
///
/// [`Info::new`] starts with a `Server` section; the server adds what only it knows
/// ([`field`](Info::field): clients connected, uptime, port, ...) and the key counts it
/// gathered from every shard ([`shards`](Info::shards)), then
/// [`render`](Info::render)s the sections the client asked for.
///
/// ```
/// use kv_server::kv::{Info, ShardStats};
/// use kv_server::resp::Reply;
/// let stats = [ShardStats { keys: 2, expires: 1 }, ShardStats { keys: 3, expires: 0 }];
/// let info = Info::new().field("Clients", "connected_clients", 7).shards(&stats);
/// let Reply::Bulk(text) = info.render(&[b"keyspace".to_vec()]) else { unreachable!() };
/// assert_eq!(text, b"# Keyspace\r\ndb0:keys=5,expires=1,avg_ttl=0\r\n");
/// let Reply::Bulk(text) = info.render(&[b"shards".to_vec()]) else { unreachable!() };
/// assert_eq!(
///     String::from_utf8(text).unwrap(),
///     "# Shards\r\nshards:2\r\nshard0:keys=2,expires=1\r\nshard1:keys=3,expires=0\r\n"
/// );
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Info {
    sections: Vec<(String, Vec<(String, String)>)>,
}

impl Default for Info {
    fn default() -> Self {
        Info::new()
    }
}

impl Info {
    /// An `INFO` with the `Server` section filled in (`redis_version` is the Redis
    /// version whose protocol behaviour is followed, for clients that check it).
    pub fn new() -> Info {
        Info {
            sections: Vec::new(),
        }
        .field("Server", "redis_version", "7.0.0")
        .field("Server", "shardloop_version", env!("CARGO_PKG_VERSION"))
        .field("Server", "redis_mode", "standalone")
        .field("Server", "arch_bits", usize::BITS)
        .field("Server", "process_id", std::process::id())
    }

    /// Adds `name:value` to `section` (created, in order, on first use). Line breaks
    /// and `:` in `name` would corrupt the reply and are replaced by spaces.
    pub fn field(mut self, section: &str, name: &str, value: impl Display) -> Info {
        let clean = |s: &str| s.replace(['\r', '\n'], " ");
        let line = (clean(name).replace(':', " "), clean(&value.to_string()));
        match self.sections.iter_mut().find(|(s, _)| s == section) {
            Some((_, fields)) => fields.push(line),
            None => self.sections.push((clean(section), vec![line])),
        }
        self
    }

    /// Adds the key counts of every shard, in shard order: Redis's `Keyspace` line with
    /// the totals, and a `Shards` section with one line per shard.
    pub fn shards(mut self, stats: &[ShardStats]) -> Info {
        let keys: usize = stats.iter().map(|s| s.keys).sum();
        let expires: usize = stats.iter().map(|s| s.expires).sum();
        if keys > 0 {
            self = self.field(
                "Keyspace",
                "db0",
                format_args!("keys={keys},expires={expires},avg_ttl=0"),
            );
        } else if !self.sections.iter().any(|(s, _)| s == "Keyspace") {
            // Redis prints the header of an empty keyspace too.
            self.sections.push(("Keyspace".to_string(), Vec::new()));
        }
        self = self.field("Shards", "shards", stats.len());
        for (i, s) in stats.iter().enumerate() {
            self = self.field(
                "Shards",
                &format!("shard{i}"),
                format_args!("keys={},expires={}", s.keys, s.expires),
            );
        }
        self
    }

    /// The reply for `INFO [section ...]`: every section when none is named (or `all`,
    /// `everything`, `default`), else the named ones, case-insensitively, in this
    /// `Info`'s order; unknown names add nothing.
    pub fn render(&self, wanted: &[Vec<u8>]) -> Reply {
        let everything = wanted.is_empty()
            || wanted.iter().any(|w| {
                [&b"all"[..], b"everything", b"default"]
                    .iter()
                    .any(|all| w.eq_ignore_ascii_case(all))
            });
        let mut text = String::new();
        for (name, fields) in &self.sections {
            if !everything
                && !wanted
                    .iter()
                    .any(|w| w.eq_ignore_ascii_case(name.as_bytes()))
            {
                continue;
            }
            if !text.is_empty() {
                text.push_str("\r\n");
            }
            text.push_str("# ");
            text.push_str(name);
            text.push_str("\r\n");
            for (k, v) in fields {
                text.push_str(k);
                text.push(':');
                text.push_str(v);
                text.push_str("\r\n");
            }
        }
        Reply::Bulk(text.into_bytes())
    }
}
