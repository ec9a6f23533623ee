//! Sorted sets: `ZADD`, `ZINCRBY`, `ZPOPMIN`, `ZPOPMAX`, `ZRANGE`, `ZSCORE`, `ZREM`,
//! `ZCARD`.

use std::time::Instant;

use super::command::{arg, bytes, integer, positive_count, SYNTAX};
use super::lists::clamp_range;
use super::store::{IntoKey, Key};
use super::zset::{Score, ZSet};
use super::Store;
use crate::resp::Reply;

const NOT_A_FLOAT: &str = "ERR value is not a valid float";
const NAN_RESULT: &str = "ERR resulting score is not a number (NaN)";

/// `ZADD`'s options.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ZAddFlags {
    /// `NX`: only add new members.
    pub nx: bool,
    /// `XX`: only update existing members.
    pub xx: bool,
    /// `GT`: only update when the new score is greater.
    pub gt: bool,
    /// `LT`: only update when the new score is less.
    pub lt: bool,
    /// `CH`: count changed members too, not only added ones.
    pub ch: bool,
    /// `INCR`: add the score to the member's (one pair only); reply the new score.
    pub incr: bool,
}

/// A sorted-set command. Every one touches one key.
#[derive(Clone, Debug, PartialEq)]
pub enum ZSetCommand {
    /// `ZADD key [NX|XX] [GT|LT] [CH] [INCR] score member [score member ...]`.
    Add {
        /// The key.
        key: Key,
        /// The options.
        flags: ZAddFlags,
        /// (score, member) pairs.
        pairs: Vec<(f64, Vec<u8>)>,
    },
    /// `ZINCRBY key increment member`: the new score.
    IncrBy(Key, f64, Vec<u8>),
    /// `ZPOPMIN` / `ZPOPMAX key [count]`.
    Pop {
        /// The key.
        key: Key,
        /// With a count, the reply is a list of (member, score) pairs.
        count: Option<usize>,
        /// `ZPOPMAX`.
        max: bool,
    },
    /// `ZRANGE key start stop [REV] [WITHSCORES]` (by rank).
    Range {
        /// The key.
        key: Key,
        /// First rank.
        start: i64,
        /// Last rank (inclusive).
        stop: i64,
        /// Highest score first.
        rev: bool,
        /// Reply (member, score) pairs.
        with_scores: bool,
    },
    /// `ZRANGE key min max BYSCORE [REV] [LIMIT offset count] [WITHSCORES]` (with
    /// `REV`, the bounds come max first, as in Redis).
    RangeByScore {
        /// The key.
        key: Key,
        /// The lowest score taken.
        min: ScoreBound,
        /// The highest score taken.
        max: ScoreBound,
        /// Highest score first.
        rev: bool,
        /// `LIMIT offset count`: skip `offset`, then take `count` (negative: all).
        limit: Option<(i64, i64)>,
        /// Reply (member, score) pairs.
        with_scores: bool,
    },
    /// `ZSCORE key member`.
    Score(Key, Vec<u8>),
    /// `ZREM key member [member ...]`: how many were removed.
    Rem(Key, Vec<Vec<u8>>),
    /// `ZCARD key`.
    Card(Key),
}

/// One end of a `BYSCORE` range: `1.5`, `(1.5` (exclusive), `-inf`, `+inf`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScoreBound {
    /// The score.
    pub value: f64,
    /// `(`: the score itself is not in the range.
    pub exclusive: bool,
}

impl ScoreBound {
    fn parse(arg: &[u8]) -> Result<ScoreBound, Reply> {
        let (exclusive, number) = match arg.strip_prefix(b"(") {
            Some(rest) => (true, rest),
            None => (false, arg),
        };
        let value =
            parse_score(number).map_err(|_| Reply::error("ERR min or max is not a float"))?;
        Ok(ScoreBound { value, exclusive })
    }

    fn below(&self, score: f64) -> bool {
        if self.exclusive {
            score > self.value
        } else {
            score >= self.value
        }
    }

    fn above(&self, score: f64) -> bool {
        if self.exclusive {
            score < self.value
        } else {
            score <= self.value
        }
    }
}

/// A score argument as Redis reads it (`1.5`, `-3`, `inf`, `+inf`, `-inf`; not NaN).
pub(super) fn parse_score(arg: &[u8]) -> Result<f64, Reply> {
    std::str::from_utf8(arg)
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|v| !v.is_nan())
        .ok_or(Reply::error(NOT_A_FLOAT))
}

impl ZSetCommand {
    /// Parses the arguments after the name and the key (arity already checked).
    pub(super) fn parse<A: IntoKey + Into<Vec<u8>>>(
        name: &str,
        key: Key,
        mut rest: impl ExactSizeIterator<Item = A>,
    ) -> Result<ZSetCommand, Reply> {
        Ok(match name {
            "zadd" => parse_zadd(key, rest)?,
            "zincrby" => {
                let increment = parse_score(bytes(&rest.next()))?;
                ZSetCommand::IncrBy(key, increment, arg(rest.next()))
            }
            "zpopmin" | "zpopmax" => match (rest.next(), rest.len()) {
                (None, _) => ZSetCommand::Pop {
                    key,
                    count: None,
                    max: name == "zpopmax",
                },
                (Some(count), 0) => ZSetCommand::Pop {
                    key,
                    count: Some(positive_count(count.as_ref())?),
                    max: name == "zpopmax",
                },
                _ => return Err(Reply::error(SYNTAX)),
            },
            "zrange" => parse_zrange(key, rest.map(A::into).collect())?,
            "zscore" => ZSetCommand::Score(key, arg(rest.next())),
            "zrem" => ZSetCommand::Rem(key, rest.map(A::into).collect()),
            "zcard" => ZSetCommand::Card(key),
            _ => unreachable!("only sorted-set commands are sent here"),
        })
    }

    /// The one key it touches.
    pub fn key(&self) -> &[u8] {
        match self {
            ZSetCommand::Add { key, .. }
            | ZSetCommand::Pop { key, .. }
            | ZSetCommand::Range { key, .. }
            | ZSetCommand::RangeByScore { key, .. }
            | ZSetCommand::IncrBy(key, ..)
            | ZSetCommand::Score(key, _)
            | ZSetCommand::Rem(key, _)
            | ZSetCommand::Card(key) => key,
        }
    }
}

fn parse_zrange(key: Key, args: Vec<Vec<u8>>) -> Result<ZSetCommand, Reply> {
    let (mut rev, mut with_scores, mut by_score, mut limit) = (false, false, false, None);
    let mut i = 2;
    while i < args.len() {
        match args[i].to_ascii_lowercase().as_slice() {
            b"rev" => rev = true,
            b"withscores" => with_scores = true,
            b"byscore" => by_score = true,
            b"limit" if i + 2 < args.len() => {
                limit = Some((integer(&args[i + 1])?, integer(&args[i + 2])?));
                i += 2;
            }
            // BYLEX is not served.
            _ => return Err(Reply::error(SYNTAX)),
        }
        i += 1;
    }
    if !by_score {
        if limit.is_some() {
            return Err(Reply::error(
                "ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX",
            ));
        }
        return Ok(ZSetCommand::Range {
            key,
            start: integer(&args[0])?,
            stop: integer(&args[1])?,
            rev,
            with_scores,
        });
    }
    let (first, second) = (ScoreBound::parse(&args[0])?, ScoreBound::parse(&args[1])?);
    let (min, max) = if rev {
        (second, first)
    } else {
        (first, second)
    };
    Ok(ZSetCommand::RangeByScore {
        key,
        min,
        max,
        rev,
        limit,
        with_scores,
    })
}

fn parse_zadd<A: IntoKey + Into<Vec<u8>>>(
    key: Key,
    rest: impl ExactSizeIterator<Item = A>,
) -> Result<ZSetCommand, Reply> {
    let mut flags = ZAddFlags::default();
    let mut rest = rest.peekable();
    while let Some(arg) = rest.peek() {
        let is = |name: &[u8]| arg.as_ref().eq_ignore_ascii_case(name);
        let flag = match () {
            _ if is(b"nx") => &mut flags.nx,
            _ if is(b"xx") => &mut flags.xx,
            _ if is(b"gt") => &mut flags.gt,
            _ if is(b"lt") => &mut flags.lt,
            _ if is(b"ch") => &mut flags.ch,
            _ if is(b"incr") => &mut flags.incr,
            _ => break,
        };
        *flag = true;
        rest.next();
    }
    let elements = rest.len();
    if elements == 0 || elements % 2 != 0 {
        return Err(Reply::error(SYNTAX));
    }
    if flags.nx && flags.xx {
        return Err(Reply::error(
            "ERR XX and NX options at the same time are not compatible",
        ));
    }
    if (flags.nx && (flags.gt || flags.lt)) || (flags.gt && flags.lt) {
        return Err(Reply::error(
            "ERR GT, LT, and/or NX options at the same time are not compatible",
        ));
    }
    if flags.incr && elements > 2 {
        return Err(Reply::error(
            "ERR INCR option supports a single increment-element pair",
        ));
    }
    // Straight from the request: a score read where it lies, each member stored
    // as it came.
    let mut pairs = Vec::with_capacity(elements / 2);
    while let (Some(score), Some(member)) = (rest.next(), rest.next()) {
        pairs.push((parse_score(score.as_ref())?, member.into()));
    }
    Ok(ZSetCommand::Add { key, flags, pairs })
}

/// A range's reply: the members, or (member, score) pairs `with_scores`.
fn range_reply(items: Vec<(&[u8], Score)>, with_scores: bool) -> Reply {
    if with_scores {
        scored(items)
    } else {
        Reply::Array(
            items
                .into_iter()
                .map(|(m, _)| Reply::Bulk(m.to_vec()))
                .collect(),
        )
    }
}

/// (member, score) pairs as replies.
fn scored<'a>(items: impl IntoIterator<Item = (&'a [u8], Score)>) -> Reply {
    Reply::Pairs(
        items
            .into_iter()
            .map(|(m, s)| (Reply::Bulk(m.to_vec()), Reply::Double(s.get())))
            .collect(),
    )
}

/// What `ZADD` does to one member, given its current score: the score to store, or
/// `None` to leave it.
fn zadd_one(flags: ZAddFlags, current: Option<Score>, score: f64) -> Result<Option<Score>, Reply> {
    match current {
        None if flags.xx => Ok(None),
        None => Ok(Some(Score::new(score).ok_or(Reply::error(NAN_RESULT))?)),
        Some(_) if flags.nx => Ok(None),
        Some(cur) => {
            let new = if flags.incr { cur.get() + score } else { score };
            let new = Score::new(new).ok_or(Reply::error(NAN_RESULT))?;
            let keep = (flags.gt && new <= cur) || (flags.lt && new >= cur);
            Ok((!keep).then_some(new))
        }
    }
}

impl Store {
    pub(super) fn run_zset(&mut self, cmd: ZSetCommand, now: Instant) -> Reply {
        match cmd {
            ZSetCommand::Add { key, flags, pairs } => {
                let reply = self.zadd(&key, flags, pairs, now);
                self.drop_if_empty(&key);
                reply
            }
            ZSetCommand::IncrBy(key, by, member) => {
                let flags = ZAddFlags {
                    incr: true,
                    ..ZAddFlags::default()
                };
                let reply = self.zadd(&key, flags, vec![(by, member)], now);
                self.drop_if_empty(&key);
                reply
            }
            ZSetCommand::Pop { key, count, max } => {
                let z = match self.collection::<ZSet>(&key, now) {
                    Ok(Some(z)) => z,
                    Ok(None) => return Reply::Array(Vec::new()),
                    Err(wrong_type) => return wrong_type,
                };
                let n = count.unwrap_or(1);
                let popped = if max { z.pop_max(n) } else { z.pop_min(n) };
                self.drop_if_empty(&key);
                let items = popped.iter().map(|(m, s)| (m.as_slice(), *s));
                match count {
                    Some(_) => scored(items),
                    // Without a count: one flat (member, score) pair, in both protocols.
                    None => Reply::Array(
                        items
                            .flat_map(|(m, s)| [Reply::Bulk(m.to_vec()), Reply::Double(s.get())])
                            .collect(),
                    ),
                }
            }
            ZSetCommand::Range {
                key,
                start,
                stop,
                rev,
                with_scores,
            } => match self.collection::<ZSet>(&key, now) {
                Ok(Some(z)) => {
                    let items = match clamp_range(start, stop, z.len()) {
                        Some((a, b)) => z.range(a, b, rev),
                        None => Vec::new(),
                    };
                    range_reply(items, with_scores)
                }
                Ok(None) => Reply::Array(Vec::new()),
                Err(wrong_type) => wrong_type,
            },
            ZSetCommand::RangeByScore {
                key,
                min,
                max,
                rev,
                limit,
                with_scores,
            } => match self.collection::<ZSet>(&key, now) {
                Ok(z) => {
                    let (offset, count) = limit.unwrap_or((0, -1));
                    let items = match z {
                        Some(z) if offset >= 0 => z
                            .by_score(|s| min.below(s), |s| max.above(s), rev)
                            .skip(offset as usize)
                            .take(usize::try_from(count).unwrap_or(usize::MAX))
                            .collect(),
                        _ => Vec::new(),
                    };
                    range_reply(items, with_scores)
                }
                Err(wrong_type) => wrong_type,
            },
            ZSetCommand::Score(key, member) => match self.collection::<ZSet>(&key, now) {
                Ok(z) => z
                    .and_then(|z| z.score(&member))
                    .map_or(Reply::Nil, |s| Reply::Double(s.get())),
                Err(wrong_type) => wrong_type,
            },
            ZSetCommand::Rem(key, members) => match self.collection::<ZSet>(&key, now) {
                Ok(Some(z)) => {
                    let n = members.iter().filter(|m| z.remove(m)).count();
                    self.drop_if_empty(&key);
                    Reply::Integer(n as i64)
                }
                Ok(None) => Reply::Integer(0),
                Err(wrong_type) => wrong_type,
            },
            ZSetCommand::Card(key) => match self.collection::<ZSet>(&key, now) {
                Ok(z) => Reply::Integer(z.map_or(0, |z| z.len() as i64)),
                Err(wrong_type) => wrong_type,
            },
        }
    }

    fn zadd(
        &mut self,
        key: &[u8],
        flags: ZAddFlags,
        pairs: Vec<(f64, Vec<u8>)>,
        now: Instant,
    ) -> Reply {
        let z = match self.collection_or_create::<ZSet>(key, now) {
            Ok(z) => z,
            Err(wrong_type) => return wrong_type,
        };
        let (mut added, mut changed) = (0, 0);
        let mut last = None;
        for (score, member) in pairs {
            let current = z.score(&member);
            match zadd_one(flags, current, score) {
                Err(nan) => return nan,
                Ok(None) => last = None,
                Ok(Some(new)) => {
                    match current {
                        None => added += 1,
                        Some(cur) if cur != new => changed += 1,
                        Some(_) => {}
                    }
                    z.insert(member, new);
                    last = Some(new);
                }
            }
        }
        if flags.incr {
            return last.map_or(Reply::Nil, |s| Reply::Double(s.get()));
        }
        Reply::Integer(if flags.ch { added + changed } else { added })
    }
}
