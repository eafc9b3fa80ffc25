//! The engine's state as checkpoint bytes, and back.
//!
//! Each operator describes its state as plain serde structs ([`crate::windowing`],
//! [`crate::anomaly`], [`crate::alerts`]; [`crate::engine`] puts them together); this module
//! only turns them into bytes: postcard for the structs (compact, exact for every `f64`,
//! NaN included) and Arrow IPC for buffered rows. The bytes go into one section of a
//! `tessera-state` checkpoint, next to the Kafka offsets they cover; the crate itself does
//! no I/O.
//!
//! Compatibility: the state starts with [`FORMAT_VERSION`]; a checkpoint of another version,
//! or of a query whose text changed, is not restored (that query's state starts fresh, and the
//! restore report says so).

use std::io::Cursor;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::StreamError;

/// Version of the engine-state layout; bump on any change to the serialized structs.
pub const FORMAT_VERSION: u32 = 4;

/// Serializes a state struct.
pub(crate) fn to_bytes<T: Serialize>(value: &T) -> Result<Vec<u8>, StreamError> {
    postcard::to_stdvec(value).map_err(|source| StreamError::CheckpointCodec { action: "encoding state", source })
}

/// Deserializes a state struct.
pub(crate) fn from_bytes<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StreamError> {
    postcard::from_bytes(bytes).map_err(|source| StreamError::CheckpointCodec { action: "decoding state", source })
}

/// [`FORMAT_VERSION`], then the serialized state.
pub(crate) fn to_versioned_bytes<T: Serialize>(value: &T) -> Result<Vec<u8>, StreamError> {
    let mut out = to_bytes(&FORMAT_VERSION)?;
    out.extend(to_bytes(value)?);
    Ok(out)
}

/// The state of [`to_versioned_bytes`]; another format version is an error.
pub(crate) fn from_versioned_bytes<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StreamError> {
    let (version, rest) = postcard::take_from_bytes::<u32>(bytes)
        .map_err(|source| StreamError::CheckpointCodec { action: "decoding the state's version", source })?;
    if version != FORMAT_VERSION {
        return Err(StreamError::Checkpoint(format!(
            "engine state format {version}; this build reads format {FORMAT_VERSION}"
        )));
    }
    from_bytes(rest)
}

/// A batch as Arrow IPC stream bytes (empty for no batch).
pub(crate) fn batch_to_ipc(batch: Option<&RecordBatch>) -> Result<Vec<u8>, StreamError> {
    let Some(batch) = batch else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    let mut writer = StreamWriter::try_new(&mut out, batch.schema_ref())?;
    writer.write(batch)?;
    writer.finish()?;
    drop(writer);
    Ok(out)
}

/// The batch of [`batch_to_ipc`] bytes (`None` for empty bytes).
pub(crate) fn batch_from_ipc(bytes: &[u8]) -> Result<Option<RecordBatch>, StreamError> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let mut reader = StreamReader::try_new(Cursor::new(bytes), None)?;
    let batch = reader
        .next()
        .transpose()?
        .ok_or_else(|| StreamError::Checkpoint("buffered rows: no batch in the IPC stream".into()))?;
    if reader.next().is_some() {
        return Err(StreamError::Checkpoint("buffered rows: more than one batch in the IPC stream".into()));
    }
    Ok(Some(batch))
}
