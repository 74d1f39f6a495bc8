//! Confluent wire format: `0x00 | schema id (u32, big-endian) | datum`.

/// The first byte of every framed record.
pub const MAGIC_BYTE: u8 = 0;
const HEADER_LEN: usize = 5;

/// A payload that is not in the Confluent wire format. Not retryable: the
/// bytes will not change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("payload is {len} byte(s); a Confluent-framed record has at least 5")]
    TooShort { len: usize },
    #[error("payload starts with byte {found:#04x}, not the magic byte 0x00: it was not written with a schema registry serializer")]
    NoMagicByte { found: u8 },
}

/// Frames `datum` under `schema_id`.
pub fn frame(schema_id: u32, datum: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + datum.len());
    frame_into(schema_id, &mut out);
    out.extend_from_slice(datum);
    out
}

/// Writes the 5-byte header into `out`; the datum follows.
pub fn frame_into(schema_id: u32, out: &mut Vec<u8>) {
    out.push(MAGIC_BYTE);
    out.extend_from_slice(&schema_id.to_be_bytes());
}

/// Splits a framed payload into its schema id and datum.
pub fn unframe(payload: &[u8]) -> Result<(u32, &[u8]), WireError> {
    if payload.len() < HEADER_LEN {
        return Err(WireError::TooShort { len: payload.len() });
    }
    if payload[0] != MAGIC_BYTE {
        return Err(WireError::NoMagicByte { found: payload[0] });
    }
    let id = u32::from_be_bytes([payload[1], payload[2], payload[3], payload[4]]);
    Ok((id, &payload[HEADER_LEN..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_and_unframe_round_trip() {
        let framed = frame(0x0102_0304, b"datum");
        assert_eq!(&framed[..5], &[0, 1, 2, 3, 4]);
        assert_eq!(unframe(&framed), Ok((0x0102_0304, &b"datum"[..])));
    }

    #[test]
    fn missing_magic_byte_and_short_payloads_are_refused() {
        assert_eq!(
            unframe(b"{\"a\":1}"),
            Err(WireError::NoMagicByte { found: b'{' })
        );
        assert_eq!(unframe(&[0, 0, 1]), Err(WireError::TooShort { len: 3 }));
    }
}
