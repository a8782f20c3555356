//! Flat / cumulative totals per function, per sample type: what `forkprof top` prints.
