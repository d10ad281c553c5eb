//! Cutting an object's bytes into chunks: fixed-size or content-defined
//! (FastCDC, Xia et al., USENIX ATC 2016, as the `fastcdc` crate's 2020
//! variant). BENCHMARKS.md ("checkpoint") has the measurements behind the
//! default.

use crate::{Error, Result};
use std::ops::Range;

/// How an object's bytes are cut into chunks (sizes in bytes).
///
/// Each chunk is hashed, compressed and stored once, so the choice decides
/// how much two similar checkpoints share. Content-defined chunking finds
/// the same cut points after bytes are inserted or removed earlier in the
/// object (a serialized header that grew by a digit), where fixed-size
/// chunking shifts every later chunk and shares nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunking {
    /// Chunks of exactly `size` bytes; the last one may be shorter.
    /// `size` must lie in `64 ..= 16 MiB`.
    Fixed {
        /// Chunk size in bytes.
        size: u32,
    },
    /// FastCDC (2020, normalization level 1) with the given bounds:
    /// `64 ≤ min ≤ 1 MiB`, `256 ≤ avg ≤ 4 MiB`, `1 KiB ≤ max ≤ 16 MiB`,
    /// `min ≤ avg ≤ max`. Chunks average somewhat above `avg`.
    ContentDefined {
        /// Smallest chunk (except the last), in bytes.
        min: u32,
        /// Target average, in bytes.
        avg: u32,
        /// Largest chunk, in bytes.
        max: u32,
    },
}

impl Default for Chunking {
    /// Content-defined, 4 KiB / 16 KiB / 64 KiB: two 100 MiB checkpoints
    /// differing in 1% of their bytes (scattered 4 KiB blocks) share all
    /// but ~7.5% of their chunks, and an insertion shifts nothing.
    fn default() -> Chunking {
        Chunking::ContentDefined {
            min: 4 << 10,
            avg: 16 << 10,
            max: 64 << 10,
        }
    }
}

impl Chunking {
    /// Checks the bounds documented on each variant.
    ///
    /// # Errors
    /// [`Error::Input`] naming the bound that is violated.
    pub fn validate(&self) -> Result<()> {
        use fastcdc::v2020::{
            AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MAX, MAXIMUM_MIN, MINIMUM_MAX, MINIMUM_MIN,
        };
        let ok = match *self {
            Chunking::Fixed { size } => (64..=MAXIMUM_MAX).contains(&size),
            Chunking::ContentDefined { min, avg, max } => {
                (MINIMUM_MIN..=MINIMUM_MAX).contains(&min)
                    && (AVERAGE_MIN..=AVERAGE_MAX).contains(&avg)
                    && (MAXIMUM_MIN..=MAXIMUM_MAX).contains(&max)
                    && min <= avg
                    && avg <= max
            }
        };
        if ok {
            Ok(())
        } else {
            Err(Error::Input(format!(
                "checkpoint chunking {self:?} is out of bounds: fixed sizes lie in 64 ..= 16 MiB; \
                 content-defined needs 64 ≤ min ≤ 1 MiB, 256 ≤ avg ≤ 4 MiB, 1 KiB ≤ max ≤ 16 MiB \
                 and min ≤ avg ≤ max"
            )))
        }
    }

    /// The largest chunk this chunking produces, in bytes.
    pub fn max_chunk(&self) -> u32 {
        match *self {
            Chunking::Fixed { size } => size,
            Chunking::ContentDefined { max, .. } => max,
        }
    }

    /// The chunks of `data` as consecutive byte ranges covering it exactly
    /// (none for empty data). Call only after [`Chunking::validate`]
    /// succeeded (the FastCDC constructor asserts its bounds).
    pub(crate) fn cut<'a>(&self, data: &'a [u8]) -> Cuts<'a> {
        match *self {
            Chunking::Fixed { size } => Cuts::Fixed {
                len: data.len(),
                at: 0,
                size: size as usize,
            },
            Chunking::ContentDefined { min, avg, max } => {
                Cuts::Cdc(fastcdc::v2020::FastCDC::new(data, min, avg, max))
            }
        }
    }
}

/// Iterator over chunk ranges, from [`Chunking::cut`].
pub(crate) enum Cuts<'a> {
    Fixed { len: usize, at: usize, size: usize },
    Cdc(fastcdc::v2020::FastCDC<'a>),
}

impl Iterator for Cuts<'_> {
    type Item = Range<usize>;

    fn next(&mut self) -> Option<Range<usize>> {
        match self {
            Cuts::Fixed { len, at, size } => {
                if *at >= *len {
                    return None;
                }
                let end = (*at).saturating_add(*size).min(*len);
                let r = *at..end;
                *at = end;
                Some(r)
            }
            Cuts::Cdc(c) => c.next().map(|ch| ch.offset..ch.offset + ch.length),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn covers(c: Chunking, data: &[u8]) -> Vec<Range<usize>> {
        let cuts: Vec<_> = c.cut(data).collect();
        let mut at = 0;
        for r in &cuts {
            assert_eq!(r.start, at);
            assert!(r.end > r.start);
            assert!(r.len() <= c.max_chunk() as usize);
            at = r.end;
        }
        assert_eq!(at, data.len());
        cuts
    }

    #[test]
    fn cuts_cover_the_data() {
        let data: Vec<u8> = (0..300_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for c in [Chunking::default(), Chunking::Fixed { size: 1000 }] {
            assert!(covers(c, &[]).is_empty());
            assert_eq!(covers(c, &data[..1]).len(), 1);
            covers(c, &data);
        }
        assert_eq!(
            covers(Chunking::Fixed { size: 1000 }, &data[..2500]),
            vec![0..1000, 1000..2000, 2000..2500]
        );
    }

    #[test]
    fn bounds_are_checked() {
        assert!(Chunking::default().validate().is_ok());
        assert!(Chunking::Fixed { size: 63 }.validate().is_err());
        assert!(Chunking::ContentDefined {
            min: 8192,
            avg: 4096,
            max: 65536
        }
        .validate()
        .is_err());
        assert!(Chunking::ContentDefined {
            min: 4096,
            avg: 16384,
            max: 32 << 20
        }
        .validate()
        .is_err());
    }
}
