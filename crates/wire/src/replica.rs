//! What a frontend follows its writer with (`/v1/replica/…`, admin only): the state as a
//! snapshot, then the journal's records after it as they become durable.
//!
//! Records travel as the journal stores them (each one line of JSON, decoded by the server's
//! journal module), one to a line, after their sequence number and a space:
//! `17 {"v":1,...}\n`. The frontend checks that the numbers follow one another.

/// Header naming the record a snapshot holds.
pub const SEQ_HEADER: &str = "x-stargrid-seq";
/// Header naming the cell a snapshot is of.
pub const CELL_HEADER: &str = "x-stargrid-cell";
/// The most records one answer holds.
pub const MAX_RECORDS: usize = 2000;

/// The writer's state at one record, in the journal's snapshot format.
#[derive(Clone, Debug)]
pub struct ReplicaSnapshot {
    /// The record it holds.
    pub seq: u64,
    /// The cell's name.
    pub cell: String,
    /// The snapshot's bytes.
    pub body: Vec<u8>,
}

/// One durable journal record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaRecord {
    /// Its sequence number.
    pub seq: u64,
    /// Its body, as the journal holds it (one line of JSON).
    pub body: Vec<u8>,
}

/// Why an answer of records does not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("records, line {line}: {reason}")]
pub struct RecordsError {
    /// The line (from 1).
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

/// Appends `record` to an answer of records. A body holding a newline cannot travel (the
/// journal's JSON never does).
pub fn write_record(out: &mut Vec<u8>, seq: u64, body: &[u8]) -> bool {
    if body.contains(&b'\n') {
        return false;
    }
    out.extend_from_slice(seq.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(body);
    out.push(b'\n');
    true
}

/// Reads an answer of records: each numbered one above the one before, after `after`.
pub fn parse_records(text: &[u8], after: u64) -> Result<Vec<ReplicaRecord>, RecordsError> {
    let mut out = Vec::new();
    let mut last = after;
    for (i, line) in text.split(|b| *b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let bad = |reason: String| RecordsError {
            line: i + 1,
            reason,
        };
        let space = line
            .iter()
            .position(|b| *b == b' ')
            .ok_or_else(|| bad("no space after the sequence number".into()))?;
        let seq: u64 = std::str::from_utf8(&line[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("the sequence number is not a number".into()))?;
        if seq <= last {
            return Err(bad(format!("record {seq} after record {last}")));
        }
        last = seq;
        out.push(ReplicaRecord {
            seq,
            body: line[space + 1..].to_vec(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn records_read_back_in_order_and_out_of_order_ones_are_refused() {
        let mut text = Vec::new();
        assert!(write_record(&mut text, 4, br#"{"v":1}"#));
        assert!(write_record(&mut text, 5, b"{}"));
        assert!(!write_record(&mut text, 6, b"{\n}"));
        let read = parse_records(&text, 3).expect("reads");
        assert_eq!(read.len(), 2);
        assert_eq!(read[0].seq, 4);
        assert_eq!(read[1].body, b"{}");
        let e = parse_records(&text, 4).expect_err("4 is not after 4");
        assert_eq!(e.line, 1);
        assert!(parse_records(b"x {}\n", 0).is_err());
        assert!(parse_records(b"12{}\n", 0).is_err());
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256), after in any::<u64>()) {
            let _ = parse_records(&bytes, after);
        }

        #[test]
        fn what_is_written_reads_back(bodies in proptest::collection::vec("[ -~]{0,40}", 0..20), start in 0u64..1000) {
            let mut text = Vec::new();
            for (i, b) in bodies.iter().enumerate() {
                prop_assert!(write_record(&mut text, start + 1 + i as u64, b.as_bytes()));
            }
            let read = parse_records(&text, start).expect("reads back");
            prop_assert_eq!(read.len(), bodies.len());
            for (r, b) in read.iter().zip(&bodies) {
                prop_assert_eq!(&r.body, &b.as_bytes().to_vec());
            }
        }
    }
}
