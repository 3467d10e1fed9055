//! Reading the CPU code object (an ELF shared object) without loading it.
//!
//! `dlopen` trusts the file: a segment that claims bytes past the end of a
//! truncated file is mapped anyway and the first access to it is a SIGBUS.
//! So before anything is loaded, [`ElfFile::parse`] checks the header and
//! that every program header (segment) and section lies inside the file;
//! [`ElfFile::exported_bytes`] then reads a defined data symbol through the
//! dynamic symbol table and the segment that holds it (the kernel
//! signatures, `q35_format::signature`). Only what the runtime needs of
//! ELF64 little-endian is read, with bounds checked at every step.

/// A validated ELF64 little-endian shared object.
pub struct ElfFile<'a> {
    bytes: &'a [u8],
    segments: Vec<Segment>,
    sections: Vec<Section>,
}

#[derive(Clone, Copy)]
struct Segment {
    kind: u32,
    offset: u64,
    vaddr: u64,
    file_size: u64,
}

#[derive(Clone, Copy)]
struct Section {
    kind: u32,
    offset: u64,
    size: u64,
    link: u32,
    entry_size: u64,
}

const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const HEADER_BYTES: usize = 64;
const PHDR_BYTES: u64 = 56;
const SHDR_BYTES: u64 = 64;
const SYM_BYTES: u64 = 24;
const PT_LOAD: u32 = 1;
const SHT_NOBITS: u32 = 8;
const SHT_DYNSYM: u32 = 11;
const ET_DYN: u16 = 3;

/// `e_machine` of this machine's ELF objects, when known.
fn host_machine() -> Option<u16> {
    match std::env::consts::ARCH {
        "x86_64" => Some(62),
        "aarch64" => Some(183),
        "riscv64" => Some(243),
        "powerpc64" => Some(21),
        _ => None,
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// `offset..offset + len` of a file of `file_len` bytes, if it lies inside.
fn span(offset: u64, len: u64, file_len: usize) -> Option<std::ops::Range<usize>> {
    let end = offset.checked_add(len)?;
    (end <= file_len as u64).then(|| offset as usize..end as usize)
}

impl<'a> ElfFile<'a> {
    /// Checks that `bytes` is a 64-bit little-endian ELF shared object for
    /// this machine whose every segment and section lies inside it; the
    /// error says what is wrong.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, String> {
        if bytes.len() < HEADER_BYTES || &bytes[..4] != ELF_MAGIC {
            return Err("not an ELF shared object (no ELF header)".into());
        }
        if bytes[4] != 2 || bytes[5] != 1 {
            return Err("not a 64-bit little-endian ELF object".into());
        }
        let e_type = u16_at(bytes, 16);
        if e_type != ET_DYN {
            return Err(format!("ELF type {e_type} is not a shared object (3)"));
        }
        let machine = u16_at(bytes, 18);
        if let Some(host) = host_machine() {
            if machine != host {
                return Err(format!(
                    "ELF machine {machine} cannot run on this {} machine (ELF machine {host})",
                    std::env::consts::ARCH
                ));
            }
        }
        let len = bytes.len();
        let table = |offset: u64, count: u16, entry: u16, expected: u64, what: &str| {
            if count == 0 {
                return Ok(0..0);
            }
            if u64::from(entry) != expected {
                return Err(format!("its {what} entries are {entry} bytes, not {expected}"));
            }
            span(offset, u64::from(count) * expected, len).ok_or_else(|| {
                format!("its {count} {what} entries at byte {offset} lie beyond the file's {len} bytes")
            })
        };
        let phdrs = table(u64_at(bytes, 32), u16_at(bytes, 56), u16_at(bytes, 54), PHDR_BYTES, "program header")?;
        let shdrs = table(u64_at(bytes, 40), u16_at(bytes, 60), u16_at(bytes, 58), SHDR_BYTES, "section header")?;

        let mut segments = Vec::new();
        for (i, h) in bytes[phdrs].chunks_exact(PHDR_BYTES as usize).enumerate() {
            let segment = Segment {
                kind: u32_at(h, 0),
                offset: u64_at(h, 8),
                vaddr: u64_at(h, 16),
                file_size: u64_at(h, 32),
            };
            let mem_size = u64_at(h, 40);
            if span(segment.offset, segment.file_size, len).is_none() {
                return Err(format!(
                    "segment {i} spans bytes {}..{} but the file has {len}: it is truncated",
                    segment.offset,
                    segment.offset.saturating_add(segment.file_size)
                ));
            }
            if segment.kind == PT_LOAD && segment.file_size > mem_size {
                return Err(format!("loadable segment {i} has more bytes in the file than in memory"));
            }
            segments.push(segment);
        }
        if !segments.iter().any(|s| s.kind == PT_LOAD) {
            return Err("it has no loadable segment".into());
        }
        let mut sections = Vec::new();
        for (i, h) in bytes[shdrs].chunks_exact(SHDR_BYTES as usize).enumerate() {
            let section = Section {
                kind: u32_at(h, 4),
                offset: u64_at(h, 24),
                size: u64_at(h, 32),
                link: u32_at(h, 40),
                entry_size: u64_at(h, 56),
            };
            if section.kind != SHT_NOBITS && span(section.offset, section.size, len).is_none() {
                return Err(format!(
                    "section {i} spans bytes {}..{} but the file has {len}: it is truncated",
                    section.offset,
                    section.offset.saturating_add(section.size)
                ));
            }
            sections.push(section);
        }
        Ok(Self {
            bytes,
            segments,
            sections,
        })
    }

    /// The bytes of the defined dynamic symbol `name` (a data object in a
    /// loadable segment), or `None` if the object does not export it.
    pub fn exported_bytes(&self, name: &str) -> Result<Option<&'a [u8]>, String> {
        let Some(dynsym) = self.sections.iter().find(|s| s.kind == SHT_DYNSYM) else {
            return Ok(None);
        };
        if dynsym.entry_size != SYM_BYTES {
            return Err(format!("its dynamic symbols are {} bytes, not {SYM_BYTES}", dynsym.entry_size));
        }
        let strings = self
            .sections
            .get(dynsym.link as usize)
            .ok_or_else(|| "its dynamic symbol table names no string table".to_string())?;
        let strings = &self.bytes[span(strings.offset, strings.size, self.bytes.len()).expect("checked in parse")];
        let symbols = &self.bytes[span(dynsym.offset, dynsym.size, self.bytes.len()).expect("checked in parse")];
        for symbol in symbols.chunks_exact(SYM_BYTES as usize) {
            let name_at = u32_at(symbol, 0) as usize;
            let Some(rest) = strings.get(name_at..) else {
                return Err("a dynamic symbol's name lies outside its string table".into());
            };
            let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            if &rest[..end] != name.as_bytes() {
                continue;
            }
            let defined = u16_at(symbol, 6) != 0;
            if !defined {
                return Ok(None);
            }
            let (vaddr, size) = (u64_at(symbol, 8), u64_at(symbol, 16));
            let segment = self
                .segments
                .iter()
                .filter(|s| s.kind == PT_LOAD)
                .find(|s| vaddr >= s.vaddr && vaddr.checked_add(size).is_some_and(|end| end <= s.vaddr + s.file_size))
                .ok_or_else(|| format!("symbol `{name}` lies outside the file's loadable segments"))?;
            let offset = segment.offset + (vaddr - segment.vaddr);
            return Ok(Some(&self.bytes[span(offset, size, self.bytes.len()).expect("inside a checked segment")]));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 shared object: header, one PT_LOAD segment covering
    /// the whole file, a dynsym with one symbol and its string table.
    fn tiny_elf(payload: &[u8]) -> Vec<u8> {
        let machine = host_machine().unwrap_or(62);
        let mut b = vec![0u8; 64];
        b[..4].copy_from_slice(ELF_MAGIC);
        b[4] = 2;
        b[5] = 1;
        b[16..18].copy_from_slice(&ET_DYN.to_le_bytes());
        b[18..20].copy_from_slice(&machine.to_le_bytes());
        // Program header at 64.
        let phoff = b.len() as u64;
        b.extend_from_slice(&[0u8; 56]);
        // Data: strings, symbols, payload.
        let strtab_off = b.len() as u64;
        let strtab = b"\0sym\0".to_vec();
        b.extend_from_slice(&strtab);
        let payload_off = b.len() as u64;
        b.extend_from_slice(payload);
        let dynsym_off = b.len() as u64;
        let mut sym = vec![0u8; 24]; // the null symbol
        let mut s = vec![0u8; 24];
        s[0..4].copy_from_slice(&1u32.to_le_bytes());
        s[6..8].copy_from_slice(&5u16.to_le_bytes());
        s[8..16].copy_from_slice(&payload_off.to_le_bytes());
        s[16..24].copy_from_slice(&(payload.len() as u64).to_le_bytes());
        sym.extend_from_slice(&s);
        b.extend_from_slice(&sym);
        // Section headers: null, strtab, dynsym.
        let shoff = b.len() as u64;
        let mut shdr = |kind: u32, offset: u64, size: u64, link: u32, entsize: u64| {
            let mut h = vec![0u8; 64];
            h[4..8].copy_from_slice(&kind.to_le_bytes());
            h[24..32].copy_from_slice(&offset.to_le_bytes());
            h[32..40].copy_from_slice(&size.to_le_bytes());
            h[40..44].copy_from_slice(&link.to_le_bytes());
            h[56..64].copy_from_slice(&entsize.to_le_bytes());
            b.extend_from_slice(&h);
        };
        shdr(0, 0, 0, 0, 0);
        shdr(3, strtab_off, strtab.len() as u64, 0, 0);
        shdr(SHT_DYNSYM, dynsym_off, 48, 1, 24);
        let total = b.len() as u64;
        b[32..40].copy_from_slice(&phoff.to_le_bytes());
        b[40..48].copy_from_slice(&shoff.to_le_bytes());
        b[54..56].copy_from_slice(&56u16.to_le_bytes());
        b[56..58].copy_from_slice(&1u16.to_le_bytes());
        b[58..60].copy_from_slice(&64u16.to_le_bytes());
        b[60..62].copy_from_slice(&3u16.to_le_bytes());
        let ph = phoff as usize;
        b[ph..ph + 4].copy_from_slice(&PT_LOAD.to_le_bytes());
        b[ph + 32..ph + 40].copy_from_slice(&total.to_le_bytes());
        b[ph + 40..ph + 48].copy_from_slice(&total.to_le_bytes());
        b
    }

    #[test]
    fn reads_an_exported_symbol() {
        let elf = tiny_elf(b"{\"x\":1}");
        let file = ElfFile::parse(&elf).unwrap();
        assert_eq!(file.exported_bytes("sym").unwrap(), Some(&b"{\"x\":1}"[..]));
        assert_eq!(file.exported_bytes("other").unwrap(), None);
    }

    #[test]
    fn a_truncated_object_is_refused_before_loading() {
        let elf = tiny_elf(b"payload");
        let err = ElfFile::parse(&elf[..elf.len() - 10]).err().unwrap();
        assert!(err.contains("lie beyond the file") || err.contains("it is truncated"), "{err}");
        // A segment that claims more than the file holds.
        let mut lying = elf.clone();
        lying[64 + 32..64 + 40].copy_from_slice(&(1u64 << 40).to_le_bytes());
        let err = ElfFile::parse(&lying).err().unwrap();
        assert!(err.starts_with("segment 0 spans bytes 0..1099511627776 but the file has"), "{err}");
        // An offset that overflows.
        let mut wrapped = elf;
        wrapped[64 + 8..64 + 16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(ElfFile::parse(&wrapped).is_err());
    }

    #[test]
    fn not_elf_is_named() {
        assert_eq!(ElfFile::parse(b"garbage").err().unwrap(), "not an ELF shared object (no ELF header)");
    }
}
