//! Site-local segments: encrypted Parquet files of one stream's rows, with a manifest.
//!
//! A segment is one Parquet file written with modular encryption: each column is encrypted
//! with the data key of its grade (`general`, `important`, `core`; see
//! [`tessera_core::GradeMap`]), and the footer with the `general` key. The Arrow schema inside
//! carries each column's grade as field metadata. Keys live in the [`Keyring`], sealed under
//! the site's KEK; the Parquet file names each key only by id (its key metadata).
//!
//! The manifest (`manifest.json`, [`crate::manifest`]) lists every segment with its time range
//! and, per grade, its key and whether it was shredded. *Shredding* a grade of a segment destroys that grade's data
//! key: the columns stay on disk as ciphertext that nobody can read. Shredding `general` (the
//! footer key) makes the whole file unreadable, so the file is deleted too. Retention
//! ([`Retention`]) shreds each grade once a segment's newest row is older than the grade's
//! retention.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{Array, RecordBatch, TimestampMillisecondArray};
use arrow_schema::SchemaRef;
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::arrow::{ArrowSchemaConverter, ArrowWriter, ProjectionMask};
use parquet::encryption::decrypt::{FileDecryptionProperties, KeyRetriever};
use parquet::encryption::encrypt::FileEncryptionProperties;
use parquet::file::properties::WriterProperties;
use tessera_core::{DataGrade, GradeMap, field_grade};

use crate::error::{Result, StoreError, io};
use crate::keys::{Kek, Keyring, SecretKey, replace_file};
use crate::manifest::{GradeKey, Manifest, SegmentMeta, Shred, ShredEvent};
use crate::retention::Retention;

/// The segments of one site, on its own disk.
#[derive(Debug)]
pub struct SegmentStore {
    dir: PathBuf,
    keyring: Keyring,
    manifest: Manifest,
}

/// A segment opened for reading ([`SegmentStore::open_segment`]): its file and keys, ready to
/// decode without the store.
pub struct OpenSegment(ParquetRecordBatchReaderBuilder<fs::File>);

impl OpenSegment {
    /// Decrypts and decodes the segment's rows.
    pub fn batches(self) -> Result<Vec<RecordBatch>> {
        Ok(self.0.build()?.collect::<Result<Vec<_>, _>>()?)
    }
}

const MANIFEST: &str = "manifest.json";
const KEYRING: &str = "keys.json";
const SEGMENTS: &str = "segments";

impl SegmentStore {
    /// Opens (or creates) the store in `dir`; its keys are sealed under `kek`.
    pub fn open(dir: impl Into<PathBuf>, kek: Kek) -> Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(dir.join(SEGMENTS)).map_err(io("create", &dir))?;
        // The manifest before the key ring: a writer stores a segment's keys before the
        // manifest lists it, so a reader beside a live writer has the keys of all it lists.
        let path = dir.join(MANIFEST);
        let manifest = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|cause| StoreError::Corrupt {
                what: "manifest",
                path: path.clone(),
                cause,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Manifest::default(),
            Err(e) => return Err(io("read", &path)(e)),
        };
        let keyring = Keyring::open(dir.join(KEYRING), kek)?;
        Ok(Self { dir, keyring, manifest })
    }

    /// Opens the store in `dir` under this store's KEK: another node's part of a store the
    /// site's nodes share (read the segments it lists; writing is its owner's).
    pub fn open_sibling(&self, dir: impl Into<PathBuf>) -> Result<Self> {
        Self::open(dir, self.keyring.kek().clone())
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every segment, oldest first (destroyed ones stay listed, marked).
    pub fn segments(&self) -> &[SegmentMeta] {
        &self.manifest.segments
    }

    /// The key ring (for rotation, and for tests that look for keys on disk).
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    fn path_of(&self, id: &str) -> PathBuf {
        self.dir.join(SEGMENTS).join(format!("{id}.parquet"))
    }

    /// Writes `batches` (rows of `stream`) as one segment; each column is encrypted under the
    /// key of its grade in `grades`. The segment's time range (what retention and scans go by)
    /// is that of its event-time column: `ts` (readings), else `window_start` (window results
    /// and alerts).
    pub fn write(
        &mut self,
        stream: &str,
        batches: &[RecordBatch],
        grades: &GradeMap,
        now_ms: i64,
    ) -> Result<Option<SegmentMeta>> {
        self.write_partition(stream, None, batches, grades, now_ms)
    }

    /// [`Self::write`] for rows that all came from one Kafka `partition` (`topic/number`),
    /// recorded in the segment's metadata: a site whose nodes share a store answers for a
    /// segment at whichever node owns its partition now.
    pub fn write_partition(
        &mut self,
        stream: &str,
        partition: Option<&str>,
        batches: &[RecordBatch],
        grades: &GradeMap,
        now_ms: i64,
    ) -> Result<Option<SegmentMeta>> {
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let Some(first) = batches.first() else { return Ok(None) };
        if rows == 0 {
            return Ok(None);
        }
        let id = format!("seg-{:08}", self.manifest.next_id);
        self.manifest.next_id += 1;
        let schema = grades.annotate(stream, first.schema().as_ref());
        let (min_ts_ms, max_ts_ms) = ts_range(batches);
        let origin = Origin { stream, partition, imported_from: None };
        let meta = self.write_file(&id, origin, &schema, batches, (min_ts_ms, max_ts_ms), now_ms)?;
        Ok(Some(meta))
    }

    fn write_file(
        &mut self,
        id: &str,
        origin: Origin<'_>,
        schema: &SchemaRef,
        batches: &[RecordBatch],
        ts: (i64, i64),
        now_ms: i64,
    ) -> Result<SegmentMeta> {
        // One key per grade present; columns listed by top-level name.
        let mut by_grade: BTreeMap<DataGrade, Vec<String>> = BTreeMap::new();
        for f in schema.fields() {
            by_grade.entry(field_grade(f).unwrap_or(DataGrade::Core)).or_default().push(f.name().clone());
        }
        // The footer is sealed with the general key, so there is always one.
        by_grade.entry(DataGrade::General).or_default();
        let mut keys: BTreeMap<DataGrade, (String, SecretKey)> = BTreeMap::new();
        for grade in by_grade.keys() {
            let key_id = format!("{id}/{grade}");
            keys.insert(*grade, (key_id.clone(), self.keyring.create(&key_id)?));
        }
        let (footer_id, footer_key) = &keys[&DataGrade::General];
        let mut encryption = FileEncryptionProperties::builder(footer_key.bytes().to_vec())
            .with_footer_key_metadata(footer_id.clone().into_bytes());
        let parquet_schema = ArrowSchemaConverter::new().convert(schema)?;
        for column in parquet_schema.columns() {
            let root = &column.path().parts()[0];
            let grade = schema.field_with_name(root).ok().and_then(field_grade).unwrap_or(DataGrade::Core);
            let (key_id, key) = &keys[&grade];
            encryption = encryption.with_column_key_and_metadata(
                &column.path().string(),
                key.bytes().to_vec(),
                key_id.clone().into_bytes(),
            );
        }
        // Compressed before it is encrypted (ciphertext does not compress).
        let properties = WriterProperties::builder()
            .set_compression(parquet::basic::Compression::SNAPPY)
            .with_file_encryption_properties(encryption.build()?)
            .build();
        let path = self.path_of(id);
        let tmp = path.with_extension("tmp");
        let file = fs::File::create(&tmp).map_err(io("create", &tmp))?;
        let mut writer = ArrowWriter::try_new(file, schema.clone(), Some(properties))?;
        for batch in batches {
            writer.write(&RecordBatch::try_new(schema.clone(), batch.columns().to_vec())?)?;
        }
        let file = writer.into_inner()?;
        file.sync_all().map_err(io("sync", &tmp))?;
        fs::rename(&tmp, &path).map_err(io("rename", &path))?;
        // The rename itself is durable only once the directory is: else a crash after the
        // manifest names the segment could leave the name without the file.
        let segments = self.dir.join(SEGMENTS);
        fs::File::open(&segments).and_then(|d| d.sync_all()).map_err(io("sync", &segments))?;
        let bytes = fs::metadata(&path).map_err(io("stat", &path))?.len();
        let meta = SegmentMeta {
            id: id.to_string(),
            stream: origin.stream.to_string(),
            partition: origin.partition.map(str::to_string),
            min_ts_ms: ts.0,
            max_ts_ms: ts.1,
            rows: batches.iter().map(|b| b.num_rows() as u64).sum(),
            bytes,
            written_at_ms: now_ms,
            imported_from: origin.imported_from,
            grades: by_grade
                .into_iter()
                .map(|(g, columns)| (g, GradeKey { key_id: keys[&g].0.clone(), columns, shredded: None }))
                .collect(),
        };
        self.manifest.segments.push(meta.clone());
        self.save_manifest()?;
        Ok(meta)
    }

    /// The segment `id`'s metadata.
    pub fn segment(&self, id: &str) -> Result<&SegmentMeta> {
        self.manifest.segments.iter().find(|s| s.id == id).ok_or_else(|| StoreError::UnknownSegment(id.to_string()))
    }

    /// The stored schema of segment `id` (with grades in the field metadata).
    pub fn schema(&self, id: &str) -> Result<SchemaRef> {
        Ok(self.reader(id)?.schema().clone())
    }

    fn reader(&self, id: &str) -> Result<ParquetRecordBatchReaderBuilder<fs::File>> {
        let meta = self.segment(id)?;
        if meta.destroyed() {
            let shred = meta.grades[&DataGrade::General].shredded.clone().expect("destroyed");
            return Err(StoreError::Shredded {
                segment: id.to_string(),
                grade: DataGrade::General,
                at_ms: shred.at_ms,
                reason: shred.reason,
            });
        }
        let path = self.path_of(id);
        let file = fs::File::open(&path).map_err(io("open", &path))?;
        let retriever = Arc::new(RingKeys { keys: self.live_keys(meta)? });
        let decryption = FileDecryptionProperties::with_key_retriever(retriever).build()?;
        Ok(ParquetRecordBatchReaderBuilder::try_new_with_options(
            file,
            ArrowReaderOptions::new().with_file_decryption_properties(decryption),
        )?)
    }

    fn live_keys(&self, meta: &SegmentMeta) -> Result<BTreeMap<String, SecretKey>> {
        let mut keys = BTreeMap::new();
        for g in meta.grades.values().filter(|g| g.shredded.is_none()) {
            let key = self
                .keyring
                .get(&g.key_id)?
                .ok_or_else(|| StoreError::Key { id: g.key_id.clone(), reason: "missing from the key ring".into() })?;
            keys.insert(g.key_id.clone(), key);
        }
        Ok(keys)
    }

    /// Reads `columns` (all if `None`) of segment `id`: [`Self::open_segment`] and then
    /// [`OpenSegment::batches`].
    pub fn read(&self, id: &str, columns: Option<&[&str]>) -> Result<Vec<RecordBatch>> {
        self.open_segment(id, columns)?.batches()
    }

    /// Opens `columns` (all if `None`) of segment `id` for reading: the file and its live keys
    /// are taken now, the rows decrypted and decoded by [`OpenSegment::batches`], which needs
    /// no access to the store (a reader holding the store's lock releases it in between).
    /// Refuses columns of a shredded grade, naming it.
    pub fn open_segment(&self, id: &str, columns: Option<&[&str]>) -> Result<OpenSegment> {
        let meta = self.segment(id)?;
        if let Some(columns) = columns {
            for (grade, key) in &meta.grades {
                if let Some(shred) = &key.shredded
                    && key.columns.iter().any(|c| columns.contains(&c.as_str()))
                {
                    return Err(StoreError::Shredded {
                        segment: id.to_string(),
                        grade: *grade,
                        at_ms: shred.at_ms,
                        reason: shred.reason.clone(),
                    });
                }
            }
        } else if let Some((grade, shred)) = meta.grades.iter().find_map(|(g, k)| k.shredded.as_ref().map(|s| (*g, s)))
        {
            return Err(StoreError::Shredded {
                segment: id.to_string(),
                grade,
                at_ms: shred.at_ms,
                reason: shred.reason.clone(),
            });
        }
        let builder = self.reader(id)?;
        let builder = match columns {
            None => builder,
            Some(columns) => {
                let schema = builder.schema().clone();
                let roots: Vec<usize> = columns.iter().map(|c| schema.index_of(c)).collect::<Result<_, _>>()?;
                let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
                builder.with_projection(mask)
            }
        };
        Ok(OpenSegment(builder))
    }

    /// Shreds the `grades` of every segment whose rows all lie in `[from_ms, to_ms]`. Segments
    /// only partly inside are left alone (and not reported). Returns what was destroyed.
    pub fn shred(
        &mut self,
        from_ms: i64,
        to_ms: i64,
        grades: &[DataGrade],
        reason: &str,
        now_ms: i64,
    ) -> Result<Vec<ShredEvent>> {
        let targets: Vec<(String, DataGrade)> = self
            .manifest
            .segments
            .iter()
            .filter(|s| s.min_ts_ms >= from_ms && s.max_ts_ms <= to_ms)
            .flat_map(|s| {
                grades
                    .iter()
                    .filter(|g| s.grades.get(g).is_some_and(|k| k.shredded.is_none()))
                    .map(|g| (s.id.clone(), *g))
            })
            .collect();
        self.shred_keys(&targets, reason, now_ms)
    }

    /// Shreds each grade of each segment older than its retention (by the segment's newest
    /// row's event time, against `now_ms`).
    pub fn apply_retention(&mut self, retention: &Retention, now_ms: i64) -> Result<Vec<ShredEvent>> {
        let targets: Vec<(String, DataGrade)> = self
            .manifest
            .segments
            .iter()
            .flat_map(|s| {
                s.grades
                    .iter()
                    .filter(|(g, k)| {
                        k.shredded.is_none() && retention.of(**g).is_some_and(|keep| s.max_ts_ms < now_ms - keep)
                    })
                    .map(|(g, _)| (s.id.clone(), *g))
            })
            .collect();
        self.shred_keys(&targets, "retention", now_ms)
    }

    fn shred_keys(&mut self, targets: &[(String, DataGrade)], reason: &str, now_ms: i64) -> Result<Vec<ShredEvent>> {
        let mut events = Vec::new();
        let mut destroy = Vec::new();
        let mut delete = Vec::new();
        for (id, grade) in targets {
            let segment = self.manifest.segments.iter_mut().find(|s| &s.id == id).expect("target from the manifest");
            // The footer key goes last: without it nothing of the file is readable, so every
            // other grade goes with it.
            let grades: Vec<DataGrade> =
                if *grade == DataGrade::General { segment.grades.keys().copied().collect() } else { vec![*grade] };
            let file_deleted = *grade == DataGrade::General;
            for g in grades {
                let key = segment.grades.get_mut(&g).expect("grade present");
                if key.shredded.is_some() {
                    continue;
                }
                key.shredded = Some(Shred { at_ms: now_ms, reason: reason.to_string() });
                destroy.push(key.key_id.clone());
                events.push(ShredEvent {
                    segment: id.clone(),
                    min_ts_ms: segment.min_ts_ms,
                    max_ts_ms: segment.max_ts_ms,
                    grade: g,
                    key_id: key.key_id.clone(),
                    reason: reason.to_string(),
                    file_deleted,
                });
            }
            if file_deleted {
                delete.push(id.clone());
            }
        }
        if events.is_empty() {
            return Ok(events);
        }
        // Keys first (the manifest then only records what already happened), then files.
        self.keyring.destroy(&destroy)?;
        self.save_manifest()?;
        for id in delete {
            let path = self.path_of(&id);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("remove", &path)(e)),
            }
        }
        Ok(events)
    }

    /// Re-seals every data key under `new` (see [`Keyring::rotate`]).
    pub fn rotate_kek(&mut self, new: Kek) -> Result<usize> {
        self.keyring.rotate(new)
    }

    fn save_manifest(&self) -> Result<()> {
        replace_file(&self.dir.join(MANIFEST), &serde_json::to_vec_pretty(&self.manifest).expect("manifest serialises"))
    }

    /// Writes rows read elsewhere (an imported segment) as a new local segment, re-encrypted
    /// under fresh keys of this site.
    pub(crate) fn write_imported(
        &mut self,
        source: &SegmentMeta,
        source_site: &str,
        schema: &SchemaRef,
        batches: &[RecordBatch],
        now_ms: i64,
    ) -> Result<SegmentMeta> {
        let id = format!("seg-{:08}", self.manifest.next_id);
        self.manifest.next_id += 1;
        let origin = Origin {
            stream: &source.stream,
            partition: None,
            imported_from: Some(format!("{source_site}/{}", source.id)),
        };
        self.write_file(&id, origin, schema, batches, (source.min_ts_ms, source.max_ts_ms), now_ms)
    }

    /// The plaintext of segment `id`'s live columns and their schema (for export).
    pub(crate) fn read_live(&self, id: &str) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let meta = self.segment(id)?;
        let live: Vec<&str> = meta
            .grades
            .values()
            .filter(|k| k.shredded.is_none())
            .flat_map(|k| k.columns.iter().map(String::as_str))
            .collect();
        let schema = self.schema(id)?;
        let ordered: Vec<&str> =
            schema.fields().iter().map(|f| f.name().as_str()).filter(|n| live.contains(n)).collect();
        let batches = self.read(id, Some(&ordered))?;
        let schema = batches.first().map(|b| b.schema()).unwrap_or_else(|| {
            Arc::new(
                schema
                    .project(&ordered.iter().map(|c| schema.index_of(c).expect("own column")).collect::<Vec<_>>())
                    .expect("own columns"),
            )
        });
        Ok((schema, batches))
    }
}

/// Hands parquet the live data keys of one segment, by the id in each column's key metadata.
struct RingKeys {
    keys: BTreeMap<String, SecretKey>,
}

impl KeyRetriever for RingKeys {
    fn retrieve_key(&self, key_metadata: &[u8]) -> parquet::errors::Result<Vec<u8>> {
        let id = std::str::from_utf8(key_metadata)
            .map_err(|_| parquet::errors::ParquetError::General("key metadata is not an id".into()))?;
        self.keys
            .get(id)
            .map(|k| k.bytes().to_vec())
            .ok_or_else(|| parquet::errors::ParquetError::General(format!("data key {id} was destroyed")))
    }
}

/// Where a segment's rows came from.
struct Origin<'a> {
    stream: &'a str,
    partition: Option<&'a str>,
    imported_from: Option<String>,
}

/// The columns a segment's event time is read from, the first one present.
pub const EVENT_TIME_COLUMNS: [&str; 2] = ["ts", "window_start"];

fn ts_range(batches: &[RecordBatch]) -> (i64, i64) {
    let mut range = (i64::MAX, i64::MIN);
    for batch in batches {
        let Some(ts) = EVENT_TIME_COLUMNS
            .iter()
            .find_map(|name| batch.column_by_name(name))
            .and_then(|c| c.as_any().downcast_ref::<TimestampMillisecondArray>())
        else {
            continue;
        };
        for i in 0..ts.len() {
            if ts.is_valid(i) {
                let v = ts.value(i);
                range = (range.0.min(v), range.1.max(v));
            }
        }
    }
    if range.0 > range.1 { (0, 0) } else { range }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Float64Array, StringArray};
    use arrow_schema::{DataType, Field, Schema, TimeUnit};

    /// Marker values no encoder would produce by chance.
    const CORE_MARKER: f64 = 4242.424242;
    const IMPORTANT_MARKER: f64 = 3131.313131;

    fn batch(ts0: i64, rows: usize) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("motor_id", DataType::Utf8, false),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
            Field::new("current_a", DataType::Float64, true),
            Field::new("vibration_x_rms", DataType::Float64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from_iter_values((0..rows).map(|i| format!("motor-{}", i % 7)))),
                Arc::new(
                    TimestampMillisecondArray::from_iter_values((0..rows).map(|i| ts0 + i as i64)).with_timezone("UTC"),
                ),
                Arc::new(Float64Array::from_iter_values((0..rows).map(|_| IMPORTANT_MARKER))),
                Arc::new(Float64Array::from_iter_values((0..rows).map(|_| CORE_MARKER))),
            ],
        )
        .unwrap()
    }

    fn every_file(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(every_file(&path));
            } else {
                out.push((path.clone(), fs::read(&path).unwrap()));
            }
        }
        out
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn no_important_or_core_value_is_on_disk_in_the_clear_and_rows_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SegmentStore::open(dir.path(), Kek::generate(1).unwrap()).unwrap();
        let written = batch(1_000, 500);
        let meta = store.write("telemetry", std::slice::from_ref(&written), &GradeMap::builtin(), 5).unwrap().unwrap();
        assert_eq!((meta.min_ts_ms, meta.max_ts_ms, meta.rows), (1_000, 1_499, 500));
        assert_eq!(meta.grades[&DataGrade::Core].columns, vec!["vibration_x_rms".to_string()]);
        for (path, bytes) in every_file(dir.path()) {
            for marker in [CORE_MARKER, IMPORTANT_MARKER] {
                assert!(!contains(&bytes, &marker.to_le_bytes()), "{marker} in the clear in {}", path.display());
                assert!(!contains(&bytes, marker.to_string().as_bytes()), "{marker} as text in {}", path.display());
            }
            assert!(
                !contains(&bytes, b"motor-3"),
                "even general columns are encrypted (footer key) in {}",
                path.display()
            );
        }
        let back = store.read(&meta.id, None).unwrap();
        assert_eq!(back.iter().map(RecordBatch::num_rows).sum::<usize>(), 500);
        assert_eq!(back[0].column(3).as_any().downcast_ref::<Float64Array>().unwrap().value(0), CORE_MARKER);
        assert_eq!(
            field_grade(back[0].schema().field(3)),
            Some(DataGrade::Core),
            "grades travel in the field metadata"
        );

        // Another KEK cannot open the store's keys.
        let other = SegmentStore::open(dir.path(), Kek::generate(1).unwrap()).unwrap();
        assert!(matches!(other.read(&meta.id, None), Err(StoreError::Key { .. })));
    }

    #[test]
    fn a_listed_segment_whose_file_is_gone_is_named_not_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SegmentStore::open(dir.path(), Kek::generate(1).unwrap()).unwrap();
        let meta = store.write("telemetry", &[batch(1_000, 10)], &GradeMap::builtin(), 1).unwrap().unwrap();
        fs::remove_file(store.path_of(&meta.id)).unwrap();
        let err = store.read(&meta.id, None).unwrap_err().to_string();
        assert!(err.contains(&format!("{}.parquet", meta.id)), "{err}");
    }

    #[test]
    fn shredding_a_range_destroys_its_keys_and_reads_of_it_fail() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SegmentStore::open(dir.path(), Kek::generate(1).unwrap()).unwrap();
        let grades = GradeMap::builtin();
        let old = store.write("telemetry", &[batch(1_000, 100)], &grades, 1).unwrap().unwrap();
        let new = store.write("telemetry", &[batch(10_000, 100)], &grades, 2).unwrap().unwrap();
        let core_key = store.keyring().get(&old.grades[&DataGrade::Core].key_id).unwrap().unwrap();

        let events = store.shred(0, 5_000, &[DataGrade::Core], "operator request #12", 3).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!((events[0].segment.as_str(), events[0].grade), (old.id.as_str(), DataGrade::Core));
        let err = store.read(&old.id, Some(&["motor_id", "vibration_x_rms"])).unwrap_err().to_string();
        assert!(err.contains("shredded") && err.contains("operator request #12"), "{err}");
        assert!(matches!(store.read(&old.id, None), Err(StoreError::Shredded { .. })));
        // The other grades of the range, and the other range, are still readable.
        assert_eq!(store.read(&old.id, Some(&["motor_id", "current_a"])).unwrap()[0].num_rows(), 100);
        assert_eq!(store.read(&new.id, None).unwrap()[0].num_rows(), 100);
        // No copy of the key remains in any file of the store, sealed or not.
        assert!(!store.keyring().contains(&old.grades[&DataGrade::Core].key_id));
        for (path, bytes) in every_file(dir.path()) {
            assert!(!contains(&bytes, core_key.bytes()), "key bytes in {}", path.display());
            assert!(!contains(&bytes, crate::to_hex(core_key.bytes()).as_bytes()), "key hex in {}", path.display());
        }
    }

    #[test]
    fn retention_shreds_each_grade_in_turn_and_the_footer_key_takes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SegmentStore::open(dir.path(), Kek::generate(1).unwrap()).unwrap();
        let meta = store.write("telemetry", &[batch(1_000, 10)], &GradeMap::builtin(), 1).unwrap().unwrap();
        let retention = Retention { general_ms: Some(10_000), important_ms: Some(5_000), core_ms: Some(1_000) };
        retention.check().unwrap();
        assert!(
            Retention { core_ms: Some(20_000), ..retention }
                .check()
                .unwrap_err()
                .to_string()
                .contains("retention.core")
        );

        assert!(store.apply_retention(&retention, 2_000).unwrap().is_empty(), "nothing old enough yet");
        let core = store.apply_retention(&retention, 3_000).unwrap();
        assert_eq!(core.iter().map(|e| e.grade).collect::<Vec<_>>(), vec![DataGrade::Core]);
        let important = store.apply_retention(&retention, 7_000).unwrap();
        assert_eq!(important.iter().map(|e| e.grade).collect::<Vec<_>>(), vec![DataGrade::Important]);
        assert_eq!(store.read(&meta.id, Some(&["motor_id", "ts"])).unwrap()[0].num_rows(), 10);
        let general = store.apply_retention(&retention, 12_000).unwrap();
        assert!(general.iter().all(|e| e.file_deleted));
        assert!(!store.path_of(&meta.id).exists());
        assert!(store.segment(&meta.id).unwrap().destroyed());
        assert_eq!(store.keyring().ids().count(), 0);
    }
}
