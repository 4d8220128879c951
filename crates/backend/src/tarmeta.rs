//! The metadata entries of a tar stream, read with a bound: GNU long names and links and PAX
//! extended headers. The `tar` crate reads them whole into memory, whatever size their header
//! claims; sbx reads raw entries (`Entries::raw(true)`) and takes these through here — both
//! where an image's layer is unpacked and where a project's fragment is read from an upload.

use std::io::Read;

/// The most a long name, long link target or extended header may hold.
pub const MAX_METADATA: u64 = 64 << 10;

/// Why a metadata entry was not read.
#[derive(Debug)]
pub enum MetadataError {
    /// Its header claims more than [`MAX_METADATA`] bytes.
    TooLarge(u64),
    /// The stream failed or ended early.
    Io(std::io::Error),
}

impl std::fmt::Display for MetadataError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetadataError::TooLarge(size) => write!(
                f,
                "a long name or extended header of {size} bytes (at most {MAX_METADATA})"
            ),
            MetadataError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// The data of a metadata entry of `size` bytes (its header's), without its trailing NULs.
pub fn read_metadata(entry: &mut impl Read, size: u64) -> Result<Vec<u8>, MetadataError> {
    if size > MAX_METADATA {
        return Err(MetadataError::TooLarge(size));
    }
    let mut data = Vec::new();
    entry
        .take(MAX_METADATA)
        .read_to_end(&mut data)
        .map_err(MetadataError::Io)?;
    while data.last() == Some(&0) {
        data.pop();
    }
    Ok(data)
}

/// The `key=value` records of a PAX extended header (`<length> <key>=<value>\n` each, the
/// length counting the whole record, so a value may hold a newline); a malformed record ends
/// the list.
pub fn pax_records(data: &[u8]) -> Vec<(&[u8], &[u8])> {
    let mut records = Vec::new();
    let mut rest = data;
    while let Some(space) = rest.iter().position(|b| *b == b' ') {
        let Some(length) = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|l| l.parse::<usize>().ok())
            .filter(|l| *l > space + 1 && *l <= rest.len())
        else {
            break;
        };
        let record = &rest[space + 1..length];
        let record = record.strip_suffix(b"\n").unwrap_or(record);
        if let Some(equals) = record.iter().position(|b| *b == b'=') {
            records.push((&record[..equals], &record[equals + 1..]));
        }
        rest = &rest[length..];
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_records_are_parsed_and_bounded() {
        let data = b"19 path=some/where\n16 linkpath=abc\n5 x=\n";
        let records = pax_records(data);
        assert_eq!(records[0], (&b"path"[..], &b"some/where"[..]));
        assert_eq!(records[1], (&b"linkpath"[..], &b"abc"[..]));
        assert!(pax_records(b"999 path=x\n").is_empty());
        assert!(pax_records(b"x").is_empty());
        // A value with a newline in it: the length says where the record ends.
        assert_eq!(
            pax_records(b"12 path=a\nb\n"),
            [(&b"path"[..], &b"a\nb"[..])]
        );
    }

    #[test]
    fn metadata_is_bounded_and_trimmed() {
        assert_eq!(read_metadata(&mut &b"name\0\0"[..], 6).unwrap(), b"name");
        assert!(matches!(
            read_metadata(&mut &b""[..], MAX_METADATA + 1),
            Err(MetadataError::TooLarge(_))
        ));
        // A header that claims less than the stream holds reads no more than the bound.
        let long = vec![b'a'; (MAX_METADATA * 2) as usize];
        assert_eq!(
            read_metadata(&mut &long[..], 10).unwrap().len() as u64,
            MAX_METADATA
        );
    }
}
