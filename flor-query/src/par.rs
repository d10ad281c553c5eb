//! Splitting per-batch work over two threads (this project's machines have
//! two cores; the scan already uses both).

/// Below this many rows in all, work stays on the calling thread.
pub(crate) const PARALLEL_ROWS: usize = 1 << 16;

/// `f` of each item, in order. From [`PARALLEL_ROWS`] rows on (`rows`
/// counts an item's), the items are split in two halves of about equal
/// rows and the second half is done on a second thread; when no thread can
/// be started, everything is done on the calling thread.
pub(crate) fn map_halves<T: Sync, R: Send>(
    items: &[T],
    rows: impl Fn(&T) -> usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let total: usize = items.iter().map(&rows).sum();
    if total < PARALLEL_ROWS || items.len() < 2 {
        return items.iter().map(f).collect();
    }
    let mut seen = 0usize;
    let mid = items
        .iter()
        .position(|it| {
            seen += rows(it);
            seen >= total / 2
        })
        .map_or(items.len() - 1, |i| i + 1)
        .clamp(1, items.len() - 1);
    let (first, second) = items.split_at(mid);
    let f = &f;
    std::thread::scope(|s| {
        let handle = std::thread::Builder::new().spawn_scoped(s, move || second.iter().map(f).collect::<Vec<R>>()).ok();
        let mut out: Vec<R> = first.iter().map(f).collect();
        match handle {
            // A panic there is a bug; it goes on as if it had happened here.
            Some(h) => out.extend(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))),
            None => out.extend(second.iter().map(f)),
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_keep_the_order_of_small_and_large_inputs() {
        for (n, rows) in [(0usize, 1usize), (1, 1 << 20), (3, 10), (7, 1 << 15), (100, 1 << 12)] {
            let items: Vec<usize> = (0..n).collect();
            let got = map_halves(&items, |_| rows, |&i| i * 3);
            assert_eq!(got, (0..n).map(|i| i * 3).collect::<Vec<_>>(), "n {n}");
        }
    }
}
