//! Hugging Face safetensors: `model.safetensors` (an 8-byte little-endian
//! header length, a JSON header `{name: {dtype, shape, data_offsets}}`,
//! then the data section) and sharded checkpoints
//! (`model.safetensors.index.json` with a `weight_map`).
//!
//! The header is parsed here rather than by the `safetensors` crate: the
//! crate's errors name neither the file nor, for a dtype/shape/length
//! disagreement, the tensor, and it reports an overlap only as a
//! non-contiguous offset. Here every error names the file and tensor and
//! says what was expected; files we write are still read back by the
//! crate in the tests.

use super::{
    atomic::{write_error, PendingFile},
    dtype::DType,
    error::{clip, quote, Error, Result},
    tensors::{Entry, RowOrder, Tensors},
};
use memmap2::Mmap;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;
use std::{
    collections::{BTreeMap, BTreeSet},
    fs::File,
    ops::Range,
    path::{Component, Path, PathBuf},
};

/// The safetensors crate refuses headers above 100 MB; so do we, so that a
/// lying length cannot make us parse the whole file as JSON.
const MAX_HEADER: usize = 100_000_000;

/// One tensor as the header describes it (range absolute in the file).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct HeaderEntry {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub range: Range<usize>,
}

/// Memory-maps a model file.
pub(crate) fn map_file(path: &Path) -> Result<Mmap> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: the map is only read. Another process truncating or
    // rewriting the file while we hold the map is outside what we can
    // defend against; every reader of memory-mapped weights shares this.
    unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))
}

/// Parses and checks a safetensors header: every tensor's dtype is
/// supported, its range lies in the data section, its length matches
/// dtype × shape, and no two ranges overlap.
pub(crate) fn parse_header(path: &Path, file: &[u8]) -> Result<Vec<HeaderEntry>> {
    let Some((prefix, rest)) = file.split_first_chunk::<8>() else {
        return Err(Error::malformed(
            path,
            format!(
                "file is {} bytes, shorter than the 8-byte header length that starts a safetensors file (truncated?)",
                file.len()
            ),
        ));
    };
    let header_len = u64::from_le_bytes(*prefix);
    if header_len > rest.len() as u64 {
        return Err(Error::malformed(
            path,
            format!(
                "header length {header_len} is larger than the {} bytes after it (truncated file, or not safetensors)",
                rest.len()
            ),
        ));
    }
    // Fits in usize: it is at most rest.len().
    let header_len = header_len as usize;
    if header_len > MAX_HEADER {
        return Err(Error::malformed(
            path,
            format!("header length {header_len} is over the {MAX_HEADER}-byte limit"),
        ));
    }
    let (header, data) = rest.split_at(header_len);
    let data_start = 8 + header_len;
    let header = std::str::from_utf8(header)
        .map_err(|e| Error::malformed(path, format!("header is not valid UTF-8: {e}")))?;
    let pairs = parse_object_pairs(header).map_err(|e| {
        Error::malformed(
            path,
            format!(
                "header is not a valid JSON object: {}",
                clip(&e.to_string())
            ),
        )
    })?;

    let mut entries = Vec::with_capacity(pairs.len());
    let mut seen = BTreeSet::new();
    for (name, value) in pairs {
        if !seen.insert(name.clone()) {
            return Err(Error::tensor(path, name, "appears twice in the header"));
        }
        if name == "__metadata__" {
            continue;
        }
        entries.push(parse_entry(path, name, &value, data.len(), data_start)?);
    }
    check_overlaps(path, &entries)?;
    Ok(entries)
}

fn parse_entry(
    path: &Path,
    name: String,
    value: &Value,
    data_len: usize,
    data_start: usize,
) -> Result<HeaderEntry> {
    #[derive(serde::Deserialize)]
    struct Raw {
        dtype: String,
        shape: Vec<usize>,
        data_offsets: (usize, usize),
    }
    let raw: Raw = serde::Deserialize::deserialize(value).map_err(|e| {
        Error::tensor(
            path,
            &name,
            format!(
                "header entry is not {{\"dtype\", \"shape\", \"data_offsets\"}}: {}",
                clip(&e.to_string())
            ),
        )
    })?;
    let dtype = match raw.dtype.as_str() {
        "F32" => DType::F32,
        "F16" => DType::F16,
        "BF16" => DType::BF16,
        other => {
            return Err(Error::tensor(
                path,
                name,
                format!(
                    "unsupported dtype {}; q35 reads F32, F16 and BF16",
                    quote(other)
                ),
            ))
        }
    };
    let (begin, end) = raw.data_offsets;
    if begin > end {
        return Err(Error::tensor(
            path,
            name,
            format!("data_offsets [{begin}, {end}] end before they begin"),
        ));
    }
    if end > data_len {
        return Err(Error::tensor(
            path,
            name,
            format!(
                "data_offsets [{begin}, {end}] reach past the end of the {data_len}-byte data section \
                 (truncated file, or a lying header)"
            ),
        ));
    }
    let expected = dtype
        .byte_len(&raw.shape)
        .map_err(|m| Error::tensor(path, &name, m))?;
    if end - begin != expected {
        return Err(Error::tensor(
            path,
            name,
            format!(
                "dtype {dtype} and shape {:?} need {expected} bytes, but data_offsets [{begin}, {end}] hold {}",
                raw.shape,
                end - begin
            ),
        ));
    }
    Ok(HeaderEntry {
        name,
        dtype,
        shape: raw.shape,
        range: data_start + begin..data_start + end,
    })
}

/// Two tensors sharing bytes means the header lies about at least one.
pub(crate) fn check_overlaps(path: &Path, entries: &[HeaderEntry]) -> Result<()> {
    let mut by_start: Vec<&HeaderEntry> = entries.iter().filter(|e| !e.range.is_empty()).collect();
    by_start.sort_by_key(|e| (e.range.start, e.range.end));
    for pair in by_start.windows(2) {
        if let [a, b] = pair {
            if b.range.start < a.range.end {
                return Err(Error::tensor(
                    path,
                    &b.name,
                    format!(
                        "its bytes {:?} overlap those of tensor {} ({:?})",
                        b.range,
                        quote(&a.name),
                        a.range
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A JSON object's members in file order, duplicates kept (serde_json's
/// `Map` would silently keep only the last of two equal names).
fn parse_object_pairs(text: &str) -> serde_json::Result<Vec<(String, Value)>> {
    struct Pairs;
    impl<'de> Visitor<'de> for Pairs {
        type Value = Vec<(String, Value)>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut pairs = Vec::new();
            while let Some(pair) = map.next_entry()? {
                pairs.push(pair);
            }
            Ok(pairs)
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let pairs = (&mut de).deserialize_map(Pairs)?;
    de.end()?;
    Ok(pairs)
}

/// Maps one safetensors file and adds its tensors.
pub(crate) fn read_file(path: &Path, tensors: &mut Tensors) -> Result<Vec<String>> {
    let map = map_file(path)?;
    let entries = parse_header(path, &map)?;
    let file = tensors.add_file(path.to_path_buf(), map);
    let mut names = Vec::with_capacity(entries.len());
    for e in entries {
        names.push(e.name.clone());
        tensors.insert(
            e.name.clone(),
            Entry {
                stored_name: e.name,
                shape: e.shape,
                dtype: e.dtype,
                file,
                range: e.range,
                rows: RowOrder::Hf,
            },
        )?;
    }
    Ok(names)
}

/// Reads a sharded checkpoint through its `model.safetensors.index.json`:
/// every listed tensor must be in the shard the index names, and every
/// tensor in a shard must be listed.
pub(crate) fn read_sharded(index: &Path, tensors: &mut Tensors) -> Result<()> {
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: BTreeMap<String, String>,
    }
    let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
    let parsed: Index = serde_json::from_str(&text).map_err(|e| {
        Error::malformed(
            index,
            format!(
                "not a safetensors index (needs `weight_map`): {}",
                clip(&e.to_string())
            ),
        )
    })?;
    let dir = index.parent().unwrap_or(Path::new(""));
    let mut shards: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (tensor, shard) in &parsed.weight_map {
        shards.entry(shard).or_default().insert(tensor);
    }
    if shards.is_empty() {
        return Err(Error::malformed(index, "`weight_map` lists no tensors"));
    }
    for (shard, listed) in shards {
        // Shards must sit beside the index: no paths out of the directory.
        let mut components = Path::new(shard).components();
        if !matches!(
            (components.next(), components.next()),
            (Some(Component::Normal(_)), None)
        ) {
            return Err(Error::malformed(
                index,
                format!(
                    "`weight_map` names shard {}, which is not a file name in this directory",
                    quote(shard)
                ),
            ));
        }
        let shard_path: PathBuf = dir.join(shard);
        let found = read_file(&shard_path, tensors)?;
        for name in &found {
            if !listed.contains(name.as_str()) {
                let said = parsed
                    .weight_map
                    .get(name)
                    .map_or("not listed".to_string(), |s| {
                        format!("listed in {}", quote(s))
                    });
                return Err(Error::tensor(
                    &shard_path,
                    name,
                    format!("is in this shard but the index says it is {said}"),
                ));
            }
        }
        let found: BTreeSet<&str> = found.iter().map(String::as_str).collect();
        if let Some(missing) = listed.iter().find(|name| !found.contains(*name)) {
            return Err(Error::tensor(
                &shard_path,
                *missing,
                format!(
                    "the index ({}) says it is in this shard, but it is not",
                    index.display()
                ),
            ));
        }
    }
    Ok(())
}

/// A tensor to write: its name, shape and dtype (F32, F16 or BF16).
#[derive(Clone, Debug)]
pub(crate) struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: DType,
}

/// Writes a safetensors file to a temporary file beside `dest`, asking
/// `data(i)` for the little-endian bytes of `specs[i]` one at a time so
/// that only one tensor is in memory. Commit the result to rename it.
pub(crate) fn write(
    dest: &Path,
    specs: &[TensorSpec],
    mut data: impl FnMut(usize) -> Result<Vec<u8>>,
) -> Result<PendingFile> {
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::json!({ "format": "pt" }));
    let mut offset = 0usize;
    let mut lengths = Vec::with_capacity(specs.len());
    for spec in specs {
        if spec.dtype.is_quantized() {
            return Err(Error::tensor(
                dest,
                &spec.name,
                format!("cannot write {} to safetensors", spec.dtype),
            ));
        }
        let len = spec
            .dtype
            .byte_len(&spec.shape)
            .map_err(|m| Error::tensor(dest, &spec.name, m))?;
        let end = offset
            .checked_add(len)
            .ok_or_else(|| Error::tensor(dest, &spec.name, "file size overflows"))?;
        header.insert(
            spec.name.clone(),
            serde_json::json!({ "dtype": spec.dtype.name(), "shape": spec.shape, "data_offsets": [offset, end] }),
        );
        lengths.push(len);
        offset = end;
    }
    let mut header =
        serde_json::to_vec(&header).map_err(|e| Error::malformed(dest, e.to_string()))?;
    // Pad with spaces to 8 bytes so the data section is 8-aligned, as the
    // reference writer does.
    header.resize(header.len().next_multiple_of(8), b' ');
    PendingFile::write(dest, |out| {
        let io = write_error(dest);
        out.write_all(&(header.len() as u64).to_le_bytes())
            .map_err(&io)?;
        out.write_all(&header).map_err(&io)?;
        for (i, (spec, len)) in specs.iter().zip(&lengths).enumerate() {
            let bytes = data(i)?;
            if bytes.len() != *len {
                return Err(Error::tensor(
                    dest,
                    &spec.name,
                    format!("got {} bytes to write, expected {len}", bytes.len()),
                ));
            }
            out.write_all(&bytes).map_err(&io)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::front::dtype::f32_to_le_bytes;

    /// A safetensors file from a header text and a data section.
    pub(crate) fn raw_file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend(header.as_bytes());
        out.extend(data);
        out
    }

    fn parse(bytes: &[u8]) -> Result<Vec<HeaderEntry>> {
        parse_header(Path::new("m/model.safetensors"), bytes)
    }

    fn error(bytes: &[u8]) -> String {
        parse(bytes).unwrap_err().to_string()
    }

    #[test]
    fn parses_a_valid_header() {
        let file = raw_file(
            r#"{"__metadata__":{"format":"pt"},"b":{"dtype":"F16","shape":[2],"data_offsets":[8,12]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
            &[0; 12],
        );
        let entries = parse(&file).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].name, "b");
        assert_eq!(entries[0].dtype, DType::F16);
        let start = file.len() - 12;
        assert_eq!(entries[1].range, start..start + 8);
    }

    #[test]
    fn truncated_file() {
        assert_eq!(
            error(&[1, 2, 3]),
            "m/model.safetensors: file is 3 bytes, shorter than the 8-byte header length that starts a \
             safetensors file (truncated?)"
        );
        assert!(error(&[]).contains("file is 0 bytes"));
    }

    #[test]
    fn header_length_larger_than_file() {
        let mut file = raw_file(
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
            &[0; 4],
        );
        file[..8].copy_from_slice(&1000u64.to_le_bytes());
        assert_eq!(
            error(&file),
            format!(
                "m/model.safetensors: header length 1000 is larger than the {} bytes after it \
                 (truncated file, or not safetensors)",
                file.len() - 8
            )
        );
        file[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(error(&file).contains(&format!("header length {}", u64::MAX)));
    }

    #[test]
    fn invalid_header_json() {
        let e = error(&raw_file(r#"{"a": {"dtype": "F32", "#, &[]));
        assert!(
            e.starts_with("m/model.safetensors: header is not a valid JSON object: "),
            "{e}"
        );
        let e = error(&raw_file("[1, 2]", &[]));
        assert!(e.contains("header is not a valid JSON object"), "{e}");
        let e = error(&raw_file(
            r#"{"a": {"dtype": "F32", "shape": [1]}}"#,
            &[0; 4],
        ));
        assert!(
            e.starts_with("m/model.safetensors: tensor `a`: header entry is not"),
            "{e}"
        );
        assert!(e.contains("missing field `data_offsets`"), "{e}");
        let e = error(&raw_file("\"\u{1}\"\u{ff}", &[]));
        assert!(e.contains("header is not a valid JSON object"), "{e}");
        let mut file = raw_file("{}  ", &[]);
        file[10] = 0xff;
        assert!(error(&file).contains("header is not valid UTF-8"));
    }

    #[test]
    fn offsets_out_of_bounds() {
        let e = error(&raw_file(
            r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
            &[0; 12],
        ));
        assert_eq!(
            e,
            "m/model.safetensors: tensor `w`: data_offsets [0, 16] reach past the end of the 12-byte data \
             section (truncated file, or a lying header)"
        );
        let e = error(&raw_file(
            r#"{"w":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}}"#,
            &[0; 12],
        ));
        assert!(
            e.contains("tensor `w`: data_offsets [8, 4] end before they begin"),
            "{e}"
        );
    }

    #[test]
    fn overlapping_offsets() {
        let e = error(&raw_file(
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
            &[0; 12],
        ));
        assert!(
            e.starts_with("m/model.safetensors: tensor `b`: its bytes "),
            "{e}"
        );
        assert!(e.contains("overlap those of tensor `a`"), "{e}");
        // Same range twice is an overlap too.
        let e = error(&raw_file(
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F16","shape":[4],"data_offsets":[0,8]}}"#,
            &[0; 8],
        ));
        assert!(e.contains("overlap those of tensor"), "{e}");
    }

    #[test]
    fn dtype_and_shape_disagree_with_byte_length() {
        let e = error(&raw_file(
            r#"{"w":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,8]}}"#,
            &[0; 8],
        ));
        assert_eq!(
            e,
            "m/model.safetensors: tensor `w`: dtype BF16 and shape [2, 3] need 12 bytes, but data_offsets \
             [0, 8] hold 8"
        );
        let e = error(&raw_file(
            r#"{"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}}"#,
            &[0; 8],
        ));
        assert!(
            e.contains("tensor `w`: shape [4294967296, 4294967296, 16] has more elements"),
            "{e}"
        );
    }

    #[test]
    fn unsupported_dtype_and_duplicates() {
        let e = error(&raw_file(
            r#"{"ids":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}"#,
            &[0; 8],
        ));
        assert_eq!(
            e,
            "m/model.safetensors: tensor `ids`: unsupported dtype `I64`; q35 reads F32, F16 and BF16"
        );
        // A name or dtype of 1 MB is quoted short.
        let long = "n".repeat(1 << 20);
        let e = error(&raw_file(
            &format!(r#"{{"{long}":{{"dtype":"{long}","shape":[1],"data_offsets":[0,8]}}}}"#),
            &[0; 8],
        ));
        let short = format!("`{}…` (1048576 bytes)", "n".repeat(40));
        assert_eq!(
            e,
            format!("m/model.safetensors: tensor {short}: unsupported dtype {short}; q35 reads F32, F16 and BF16")
        );
        let e = error(&raw_file(
            &format!(r#"{{"w":{{"dtype":"F32","shape":"{long}","data_offsets":[0,8]}}}}"#),
            &[0; 8],
        ));
        assert!(
            e.len() < 400 && e.contains("bytes cut]…"),
            "{}",
            &e[..e.len().min(400)]
        );
        let e = error(&raw_file(
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
            &[0; 8],
        ));
        assert_eq!(
            e,
            "m/model.safetensors: tensor `a`: appears twice in the header"
        );
    }

    #[test]
    fn every_prefix_and_byte_flip_errors_without_panicking() {
        let file = raw_file(
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F16","shape":[2],"data_offsets":[8,12]}}"#,
            &[7; 12],
        );
        assert!(parse(&file).is_ok());
        for len in 0..file.len() {
            assert!(
                parse(&file[..len]).is_err(),
                "prefix of {len} bytes accepted"
            );
        }
        for i in 0..file.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bad = file.clone();
                bad[i] ^= flip;
                let _ = parse(&bad);
            }
        }
    }

    #[test]
    fn written_files_read_back_here_and_in_the_safetensors_crate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        let specs = [
            TensorSpec {
                name: "x".into(),
                shape: vec![2, 3],
                dtype: DType::F32,
            },
            TensorSpec {
                name: "y".into(),
                shape: vec![1],
                dtype: DType::F32,
            },
        ];
        let values = [vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], vec![-1.0]];
        write(&path, &specs, |i| Ok(f32_to_le_bytes(&values[i])))
            .unwrap()
            .commit()
            .unwrap();

        let mut tensors = Tensors::new();
        read_file(&path, &mut tensors).unwrap();
        assert_eq!(tensors.to_f32("x").unwrap(), values[0]);
        assert_eq!(tensors.shape("y"), Some(&[1usize][..]));

        let bytes = std::fs::read(&path).unwrap();
        let st = ::safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.tensor("x").unwrap().shape(), &[2, 3]);
        assert_eq!(st.tensor("y").unwrap().data(), &(-1.0f32).to_le_bytes());
    }

    #[test]
    fn sharded_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let shard = |name: &str, tensor: &str| {
            let header =
                format!(r#"{{"{tensor}":{{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}}}"#);
            std::fs::write(
                dir.path().join(name),
                raw_file(&header, &2.5f32.to_le_bytes()),
            )
            .unwrap();
        };
        shard("model-00001-of-00002.safetensors", "a");
        shard("model-00002-of-00002.safetensors", "b");
        let index = dir.path().join("model.safetensors.index.json");
        let write_index = |map: &str| {
            std::fs::write(&index, format!(r#"{{"metadata":{{}},"weight_map":{map}}}"#)).unwrap()
        };

        write_index(
            r#"{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}"#,
        );
        let mut tensors = Tensors::new();
        read_sharded(&index, &mut tensors).unwrap();
        assert_eq!(tensors.names().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(tensors.to_f32("b").unwrap(), [2.5]);

        write_index(
            r#"{"a":"model-00002-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}"#,
        );
        let e = read_sharded(&index, &mut Tensors::new())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("model-00002-of-00002.safetensors: tensor `a`: the index ("),
            "{e}"
        );
        assert!(
            e.ends_with("says it is in this shard, but it is not"),
            "{e}"
        );

        // A shard holding a tensor the index does not list.
        let header = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"c":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
        std::fs::write(
            dir.path().join("extra.safetensors"),
            raw_file(header, &[0; 8]),
        )
        .unwrap();
        write_index(r#"{"a":"extra.safetensors"}"#);
        let e = read_sharded(&index, &mut Tensors::new())
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with("extra.safetensors: tensor `c`: is in this shard but the index says it is not listed"),
            "{e}"
        );

        write_index(r#"{"a":"../model-00001-of-00002.safetensors"}"#);
        let e = read_sharded(&index, &mut Tensors::new())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("which is not a file name in this directory"),
            "{e}"
        );

        write_index(r#"{"a":"missing.safetensors"}"#);
        let e = read_sharded(&index, &mut Tensors::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.safetensors: No such file"), "{e}");
    }
}
