//! The sorted set: members with scores, ordered by (score, member), as Redis orders
//! them.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};

/// A score that is never NaN, so that it has a total order (Redis refuses NaN scores
/// and NaN results, and so do the commands here).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Score(f64);

impl Score {
    /// `None` for NaN.
    pub(super) fn new(v: f64) -> Option<Score> {
        (!v.is_nan()).then_some(Score(v))
    }

    pub(super) fn get(self) -> f64 {
        self.0
    }
}

impl Eq for Score {}

impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Score {
    fn cmp(&self, other: &Self) -> Ordering {
        // Never NaN, so `partial_cmp` always answers; -0.0 and 0.0 are equal, as in
        // Redis.
        self.0.partial_cmp(&other.0).unwrap_or(Ordering::Equal)
    }
}

/// Members and their scores, with the members also kept in (score, member) order for
/// ranges and pops. Both structures always hold the same members.
#[derive(Clone, Debug, Default)]
pub(super) struct ZSet {
    scores: HashMap<Vec<u8>, Score>,
    order: BTreeSet<(Score, Vec<u8>)>,
}

impl ZSet {
    pub(super) fn len(&self) -> usize {
        self.scores.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    pub(super) fn score(&self, member: &[u8]) -> Option<Score> {
        self.scores.get(member).copied()
    }

    /// Sets `member`'s score; whether the member is new.
    pub(super) fn insert(&mut self, member: Vec<u8>, score: Score) -> bool {
        match self.scores.insert(member.clone(), score) {
            Some(old) => {
                if old != score {
                    self.order.remove(&(old, member.clone()));
                    self.order.insert((score, member));
                }
                false
            }
            None => {
                self.order.insert((score, member));
                true
            }
        }
    }

    /// Removes `member`; whether it was there.
    pub(super) fn remove(&mut self, member: &[u8]) -> bool {
        match self.scores.remove(member) {
            Some(score) => {
                self.order.remove(&(score, member.to_vec()));
                true
            }
            None => false,
        }
    }

    /// Removes and returns up to `count` members with the lowest scores, lowest first.
    pub(super) fn pop_min(&mut self, count: usize) -> Vec<(Vec<u8>, Score)> {
        let mut out = Vec::with_capacity(count.min(self.len()));
        while out.len() < count {
            let Some((score, member)) = self.order.pop_first() else {
                break;
            };
            self.scores.remove(&member);
            out.push((member, score));
        }
        out
    }

    /// Removes and returns up to `count` members with the highest scores, highest
    /// first.
    pub(super) fn pop_max(&mut self, count: usize) -> Vec<(Vec<u8>, Score)> {
        let mut out = Vec::with_capacity(count.min(self.len()));
        while out.len() < count {
            let Some((score, member)) = self.order.pop_last() else {
                break;
            };
            self.scores.remove(&member);
            out.push((member, score));
        }
        out
    }

    /// The members whose score is `from_min` (at or past the lower end) and
    /// `to_max` (at or before the upper end), lowest first (highest first when
    /// `rev`).
    pub(super) fn by_score<'a>(
        &'a self,
        from_min: impl Fn(f64) -> bool + 'a,
        to_max: impl Fn(f64) -> bool + 'a,
        rev: bool,
    ) -> Box<dyn Iterator<Item = (&'a [u8], Score)> + 'a> {
        let pick = |(score, member): &'a (Score, Vec<u8>)| (member.as_slice(), *score);
        if rev {
            Box::new(
                self.order
                    .iter()
                    .rev()
                    .skip_while(move |(s, _)| !to_max(s.get()))
                    .take_while(move |(s, _)| from_min(s.get()))
                    .map(pick),
            )
        } else {
            Box::new(
                self.order
                    .iter()
                    .skip_while(move |(s, _)| !from_min(s.get()))
                    .take_while(move |(s, _)| to_max(s.get()))
                    .map(pick),
            )
        }
    }

    /// The members of ranks `start..=stop` (already clamped to the set), lowest score
    /// first, or highest first when `rev`.
    pub(super) fn range(&self, start: usize, stop: usize, rev: bool) -> Vec<(&[u8], Score)> {
        let take = stop + 1 - start;
        fn pick((score, member): &(Score, Vec<u8>)) -> (&[u8], Score) {
            (member.as_slice(), *score)
        }
        if rev {
            self.order
                .iter()
                .rev()
                .skip(start)
                .take(take)
                .map(pick)
                .collect()
        } else {
            self.order.iter().skip(start).take(take).map(pick).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: f64) -> Score {
        Score::new(v).unwrap()
    }

    #[test]
    fn orders_by_score_then_member() {
        let mut z = ZSet::default();
        assert!(z.insert(b"b".to_vec(), s(1.0)));
        assert!(z.insert(b"a".to_vec(), s(1.0)));
        assert!(z.insert(b"c".to_vec(), s(0.5)));
        assert!(!z.insert(b"c".to_vec(), s(2.0)));
        let names: Vec<_> = z.range(0, 2, false).into_iter().map(|(m, _)| m).collect();
        assert_eq!(names, [&b"a"[..], b"b", b"c"]);
        let rev: Vec<_> = z.range(0, 1, true).into_iter().map(|(m, _)| m).collect();
        assert_eq!(rev, [&b"c"[..], b"b"]);
        assert_eq!(z.pop_min(1), vec![(b"a".to_vec(), s(1.0))]);
        assert_eq!(
            z.pop_max(5),
            vec![(b"c".to_vec(), s(2.0)), (b"b".to_vec(), s(1.0))]
        );
        assert!(z.is_empty());
    }

    #[test]
    fn nan_is_refused_and_zeros_are_equal() {
        assert!(Score::new(f64::NAN).is_none());
        assert_eq!(s(-0.0).cmp(&s(0.0)), Ordering::Equal);
    }
}
