//! A TSP program: every instruction with the cycle it issues on, the unit
//! (functional slice) that runs it, and the stream operands it reads and
//! writes, each at a fixed offset from its issue cycle. There are no
//! queues, caches or back-pressure: an operand must be on its stream on
//! exactly the cycle its instruction reads it. The text form is both the
//! `--emit tsp` listing and the code object the simulator parses.
//!
//! ```text
//! q35-tsp-program 2 lanes=320
//! 0 MEM3 read addr=0 out=S8:i8@5x140
//! 5 VXM1 dequant kind=q35 cols=320 in=S8:i8@0x140 out=S12:i8@144x320
//! 149 MXM0 install buffer=0 in=S12:i8@0x320
//! ```
//!
//! `S8:i8@5x140` is stream 8 carrying int8 vectors, the first on cycle
//! issue + 5, then one a cycle, 140 in all. A 32-bit vector (`i32`, `f32`)
//! takes four byte-streams, `S8` to `S11`.

use crate::QuantKind;
use std::fmt;

/// First line of every program.
pub const PROGRAM_MAGIC: &str = "q35-tsp-program 2";

/// Scalar vectors a token's quantized row of `groups` groups takes: half
/// a vector's lanes per group's pair of scalars.
pub fn scalar_vectors(lanes: usize, groups: usize) -> usize {
    groups.div_ceil(lanes / 2).max(1)
}

/// What a stream carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Elem {
    I8,
    I32,
    F32,
}

impl Elem {
    /// Byte-streams one vector takes.
    pub fn streams(self) -> u16 {
        match self {
            Elem::I8 => 1,
            Elem::I32 | Elem::F32 => 4,
        }
    }

    /// SRAM rows (vectors of `lanes` bytes) one vector takes.
    pub fn rows(self) -> u32 {
        self.streams() as u32
    }

    fn name(self) -> &'static str {
        match self {
            Elem::I8 => "i8",
            Elem::I32 => "i32",
            Elem::F32 => "f32",
        }
    }
}

/// A functional slice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Unit {
    Mem(u16),
    Vxm(u16),
    Mxm(u16),
    /// A chip-to-chip link port: `send` to the next chip of a pipeline,
    /// `recv` from the previous one.
    Link(u16),
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unit::Mem(i) => write!(f, "MEM{i}"),
            Unit::Vxm(i) => write!(f, "VXM{i}"),
            Unit::Mxm(i) => write!(f, "MXM{i}"),
            Unit::Link(i) => write!(f, "LINK{i}"),
        }
    }
}

/// `len` vectors of `elem` on `stream`, the first at issue + `at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Operand {
    pub stream: u16,
    pub elem: Elem,
    pub at: u64,
    pub len: u32,
}

impl Operand {
    /// The cycles `[first, end)` it occupies for an instruction issued at `issue`.
    pub fn cycles(&self, issue: u64) -> (u64, u64) {
        (issue + self.at, issue + self.at + self.len as u64)
    }
}

/// A lane range `[lo, hi)` of a weight tile's columns that is one group's
/// part of the tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub lo: u16,
    pub hi: u16,
    /// The weight group the columns belong to.
    pub group: u16,
}

/// What an instruction does.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// MEM: SRAM rows from `addr` onto the output stream, one vector a
    /// cycle, vector j from row `addr + j·stride` (`stride` 0: back to back).
    Read { addr: u32, stride: u32 },
    /// MEM: the input stream's vectors into SRAM rows from `addr`, as
    /// [`Op::Read`] lays them out.
    Write { addr: u32, stride: u32 },
    /// MEM: the rows of the items the input's i32 index vector names (lane
    /// j: item j), item i's `per` vectors from row `addr + index·stride`,
    /// back to back.
    /// The rows may lie in `slices` slices from the instruction's (a table
    /// striped over whole slices; row r of the stripe is row r mod the
    /// slice's rows of slice r div them).
    Gather { addr: u32, stride: u32, per: u16, slices: u16 },
    /// MEM: writes item j of the second input (`per` vectors each) at row
    /// `addr + index_j·stride`, the indices from the first input's i32 vector.
    Scatter { addr: u32, stride: u32, per: u16 },
    /// VXM: rows stored whole (`tsp::tile::pack_row`, one item per `per`
    /// input vectors) to f32 activations, a vector per lane-wide tile.
    RowDequant { kind: QuantKind, group: u16, width: u32, per: u16 },
    /// VXM: RMSNorm of each token's row (`width` wide) with the gain vectors
    /// of the second input.
    Norm { width: u32, eps: f64 },
    /// VXM: rotary embedding of each token's row, heads of `head_dim`, at
    /// the positions in the second input's i32 vector.
    Rope { width: u32, head_dim: u32, theta: f64 },
    /// VXM: a row-wise function of one or two rows of `width`.
    Elementwise { function: RowFunction, width: u32 },
    /// VXM: causal grouped-query attention of each token's queries over the
    /// cached keys and values of positions up to its own (i32 vector).
    Attention { heads: u16, kv_heads: u16, head_dim: u16, context: u32 },
    /// VXM: lane-parallel packed codes (docs: `tsp::tile`) to `cols` int8
    /// column vectors, each code scaled to the common step range/105
    /// (7·q4, 15·q3).
    Dequant { kind: QuantKind, cols: u16 },
    /// MXM: installs the input's column vectors into the plane's weight
    /// buffer `buffer` (0 or 1: one installs while the other multiplies).
    Install { buffer: u8 },
    /// VXM: quantizes each token's f32 activations (`width` wide, groups of
    /// `group`) to int8 per group: one int8 vector per lane-wide tile of
    /// the row, and per token its scalar vectors: vector g / h (h =
    /// lanes / 2, [`scalar_vectors`]) holds group g's fl32(sx/105) in lane
    /// g % h and fl32(sx·Σx8) in lane h + g % h.
    Quantize { group: u16, width: u16 },
    /// MXM: each input int8 vector times the installed weights, once per
    /// segment (the vector's other lanes masked): int32 dot products, one
    /// output vector per (token, segment).
    Multiply { buffer: u8, segments: Vec<Segment> },
    /// VXM: acc + Σ_segments fl32(range_g·s_g)·D + min_g·t_g per token, with
    /// per-segment (range, min) vectors and the tokens' scalar vectors
    /// (each token's one vector that holds every segment's group; `groups`
    /// in the row); `first`: no previous accumulator input.
    Accumulate { segments: Vec<Segment>, groups: u16, first: bool },
    /// LINK: takes its input vectors off the stream, one a cycle, for the
    /// next chip. The link carries them in order, each in
    /// ⌈bytes / `link_bytes_per_cycle`⌉ cycles, starting no earlier than
    /// the cycle it was taken nor before the previous vector is through;
    /// a vector arrives `link_latency` cycles after it is through.
    Send,
    /// LINK: puts the vectors the previous chip sent, in the order sent,
    /// on its output stream, one a cycle; each must have arrived by then.
    Recv,
}

/// The VXM's row functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowFunction {
    Add,
    Mul,
    Silu,
    /// silu(a)·b.
    SwiGlu,
    /// a, unchanged (a row passed on, e.g. to a scatter).
    Copy,
}

impl RowFunction {
    pub fn name(self) -> &'static str {
        match self {
            RowFunction::Add => "add",
            RowFunction::Mul => "mul",
            RowFunction::Silu => "silu",
            RowFunction::SwiGlu => "swiglu",
            RowFunction::Copy => "copy",
        }
    }

    /// Rows it reads.
    pub fn inputs(self) -> usize {
        if matches!(self, RowFunction::Silu | RowFunction::Copy) {
            1
        } else {
            2
        }
    }
}

/// One instruction.
#[derive(Clone, Debug, PartialEq)]
pub struct Instr {
    pub cycle: u64,
    pub unit: Unit,
    pub op: Op,
    pub inputs: Vec<Operand>,
    pub outputs: Vec<Operand>,
}

impl Instr {
    /// The last cycle it reads or writes a stream, plus one.
    pub fn end(&self) -> u64 {
        self.inputs.iter().chain(&self.outputs).map(|o| o.cycles(self.cycle).1).max().unwrap_or(self.cycle + 1)
    }
}

/// What SRAM must hold before the program runs, built by the loader from
/// the artifact's weights (`tsp::image`), at MEM `slice`, `row`.
#[derive(Clone, Debug, PartialEq)]
pub struct Placement {
    pub weight: String,
    pub slice: u16,
    pub row: u32,
    pub form: Form,
}

/// How a placed weight is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// The lane-parallel packed tile of rows `n0..n0 + lanes`, columns
    /// `k0..k0 + cols` ([`super::tile::pack_tile`]).
    Tile { n0: u32, k0: u32, cols: u32 },
    /// That tile's group segments' (range, min) f32 vector pairs
    /// ([`super::tile::segment_params`]).
    Params { n0: u32, k0: u32, cols: u32 },
    /// Every row stored whole ([`super::tile::pack_row`]), row n at
    /// `row + n·stride`.
    Rows { stride: u32 },
    /// A vector weight (a norm's gain) as f32 vectors.
    Vector,
}

/// Where the host puts a call's inputs and finds its output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Io {
    /// `tokens` and `positions` (an i32 vector, a lane per token) or
    /// `logits` (f32, `width` wide, token by token).
    pub name: String,
    pub slice: u16,
    pub row: u32,
    pub width: u32,
    /// 0: token by token in one slice. Otherwise tile by tile, each tile's
    /// tokens in a row, `striped` tiles a slice, over whole slices from
    /// `slice` (a chunk's logits, too wide for one).
    pub striped: u32,
}

impl Io {
    /// Where the f32 vector `v` (its lane-wide tile) of token `t` of
    /// `tokens` is: (slice, row).
    pub fn vector_at(&self, t: usize, v: usize, tokens: usize, lanes: usize) -> (usize, u32) {
        let tiles = (self.width as usize).div_ceil(lanes);
        match self.striped as usize {
            0 => (self.slice as usize, self.row + 4 * (t * tiles + v) as u32),
            per => (self.slice as usize + v / per, self.row + 4 * ((v % per) * tokens + t) as u32),
        }
    }
}

/// A whole program.
#[derive(Clone, Debug, PartialEq)]
pub struct Program {
    pub lanes: usize,
    /// The machine it was scheduled for (JSON), if recorded.
    pub config: Option<String>,
    pub placements: Vec<Placement>,
    pub io: Vec<Io>,
    /// Tokens one run takes.
    pub tokens: u32,
    pub instrs: Vec<Instr>,
    /// Where each dispatch of the plan begins in `instrs`, from
    /// `first_dispatch` on.
    pub dispatches: Vec<usize>,
    /// Which chip of a pipeline of `chips` runs it (0 of 1: one chip), and
    /// the plan's index of its first dispatch.
    pub chip: u32,
    pub chips: u32,
    pub first_dispatch: usize,
}

impl Program {
    /// Cycles from the first issue to the last stream use.
    pub fn cycles(&self) -> u64 {
        self.instrs.iter().map(Instr::end).max().unwrap_or(0)
    }
}

fn stride_text(stride: u32) -> String {
    if stride == 0 {
        String::new()
    } else {
        format!(" stride={stride}")
    }
}

fn segments_text(segments: &[Segment]) -> String {
    segments.iter().map(|s| format!("{}:{}:{}", s.lo, s.hi, s.group)).collect::<Vec<_>>().join(",")
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "S{}:{}@{}x{}", self.stream, self.elem.name(), self.at, self.len)
    }
}

impl fmt::Display for Instr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} ", self.cycle, self.unit)?;
        match &self.op {
            Op::Read { addr, stride } => write!(f, "read addr={addr}{}", stride_text(*stride))?,
            Op::Write { addr, stride } => write!(f, "write addr={addr}{}", stride_text(*stride))?,
            Op::Gather { addr, stride, per, slices } => write!(f, "gather addr={addr} stride={stride} per={per} slices={slices}")?,
            Op::Scatter { addr, stride, per } => write!(f, "scatter addr={addr} stride={stride} per={per}")?,
            Op::RowDequant { kind, group, width, per } => write!(f, "rowdequant kind={kind} group={group} width={width} per={per}")?,
            Op::Norm { width, eps } => write!(f, "norm width={width} eps={eps:?}")?,
            Op::Rope { width, head_dim, theta } => write!(f, "rope width={width} head_dim={head_dim} theta={theta:?}")?,
            Op::Elementwise { function, width } => write!(f, "{} width={width}", function.name())?,
            Op::Attention { heads, kv_heads, head_dim, context } => {
                write!(f, "attention heads={heads} kv_heads={kv_heads} head_dim={head_dim} context={context}")?
            }
            Op::Dequant { kind, cols } => write!(f, "dequant kind={kind} cols={cols}")?,
            Op::Install { buffer } => write!(f, "install buffer={buffer}")?,
            Op::Quantize { group, width } => write!(f, "quantize group={group} width={width}")?,
            Op::Multiply { buffer, segments } => write!(f, "multiply buffer={buffer} segments={}", segments_text(segments))?,
            Op::Accumulate { segments, groups, first } => {
                write!(f, "accumulate segments={} groups={groups} first={}", segments_text(segments), u8::from(*first))?
            }
            Op::Send => write!(f, "send")?,
            Op::Recv => write!(f, "recv")?,
        }
        for input in &self.inputs {
            write!(f, " in={input}")?;
        }
        for output in &self.outputs {
            write!(f, " out={output}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{PROGRAM_MAGIC} lanes={}", self.lanes)?;
        if let Some(config) = &self.config {
            writeln!(f, "config {config}")?;
        }
        writeln!(f, "tokens {}", self.tokens)?;
        if self.chips > 1 {
            writeln!(f, "chip {} of {} first-dispatch {}", self.chip, self.chips, self.first_dispatch)?;
        }
        for p in &self.placements {
            let (kind, fields) = match p.form {
                Form::Tile { n0, k0, cols } => ("tile", format!(" n0={n0} k0={k0} cols={cols}")),
                Form::Params { n0, k0, cols } => ("params", format!(" n0={n0} k0={k0} cols={cols}")),
                Form::Rows { .. } => ("rows", String::new()),
                Form::Vector => ("vector", String::new()),
            };
            let stride = match p.form {
                Form::Rows { stride } => format!(" stride={stride}"),
                _ => String::new(),
            };
            writeln!(f, "place {kind} weight={}{fields} at={}:{}{stride}", p.weight, p.slice, p.row)?;
        }
        for io in &self.io {
            let striped = if io.striped > 0 { format!(" tiles-per-slice={}", io.striped) } else { String::new() };
            writeln!(f, "io {} at={}:{} width={}{striped}", io.name, io.slice, io.row, io.width)?;
        }
        let mut marks = self.dispatches.iter().enumerate().peekable();
        for (i, instr) in self.instrs.iter().enumerate() {
            while let Some((d, _)) = marks.next_if(|(_, &at)| at == i) {
                writeln!(f, "dispatch {}", self.first_dispatch + d)?;
            }
            writeln!(f, "{instr}")?;
        }
        Ok(())
    }
}

/// A line of a program text that cannot be read, with its number.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("TSP program line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

fn number<T: std::str::FromStr>(text: &str, what: &str) -> Result<T, String> {
    text.parse().map_err(|_| format!("{what} `{text}` is not a number in range"))
}

fn operand(text: &str) -> Result<Operand, String> {
    let bad = || format!("operand `{text}` is not S<stream>:<i8|i32|f32>@<offset>x<count>");
    let rest = text.strip_prefix('S').ok_or_else(bad)?;
    let (stream, rest) = rest.split_once(':').ok_or_else(bad)?;
    let (elem, rest) = rest.split_once('@').ok_or_else(bad)?;
    let (at, len) = rest.split_once('x').ok_or_else(bad)?;
    let elem = match elem {
        "i8" => Elem::I8,
        "i32" => Elem::I32,
        "f32" => Elem::F32,
        _ => return Err(bad()),
    };
    Ok(Operand {
        stream: number(stream, "stream")?,
        elem,
        at: number(at, "offset")?,
        len: number(len, "count")?,
    })
}

fn segments(text: &str) -> Result<Vec<Segment>, String> {
    text.split(',')
        .map(|s| {
            let parts: Vec<&str> = s.split(':').collect();
            let [lo, hi, group] = parts[..] else {
                return Err(format!("segment `{s}` is not lo:hi:group"));
            };
            let segment = Segment {
                lo: number(lo, "segment start")?,
                hi: number(hi, "segment end")?,
                group: number(group, "group")?,
            };
            if segment.lo >= segment.hi {
                return Err(format!("segment `{s}` is empty"));
            }
            Ok(segment)
        })
        .collect()
}

fn buffer(text: &str) -> Result<u8, String> {
    match text {
        "0" => Ok(0),
        "1" => Ok(1),
        other => Err(format!("buffer `{other}` is neither 0 nor 1")),
    }
}

/// `key=value` words after a leading word.
fn key_values<'a>(words: impl Iterator<Item = &'a str>) -> Result<std::collections::BTreeMap<&'a str, &'a str>, String> {
    let mut fields = std::collections::BTreeMap::new();
    for word in words {
        let (key, value) = word.split_once('=').ok_or_else(|| format!("`{word}` is not key=value"))?;
        if fields.insert(key, value).is_some() {
            return Err(format!("`{key}` given twice"));
        }
    }
    Ok(fields)
}

/// `S:R`: a MEM slice and row.
fn location(text: &str) -> Result<(u16, u32), String> {
    let (slice, row) = text.split_once(':').ok_or_else(|| format!("`{text}` is not slice:row"))?;
    Ok((number(slice, "slice")?, number(row, "row")?))
}

fn parse_placement(text: &str) -> Result<Placement, String> {
    let mut words = text.split_whitespace();
    let kind = words.next().ok_or("empty placement")?;
    let mut fields = key_values(words)?;
    let mut take = |key: &str| fields.remove(key).ok_or_else(|| format!("`place {kind}` needs `{key}=`"));
    let weight = take("weight")?.to_string();
    let (slice, row) = location(take("at")?)?;
    let mut num = |key: &str| -> Result<u32, String> { number(take(key)?, key) };
    let form = match kind {
        "tile" => Form::Tile { n0: num("n0")?, k0: num("k0")?, cols: num("cols")? },
        "params" => Form::Params { n0: num("n0")?, k0: num("k0")?, cols: num("cols")? },
        "rows" => Form::Rows { stride: num("stride")? },
        "vector" => Form::Vector,
        other => return Err(format!("unknown placement `{other}` (tile, params, rows, vector)")),
    };
    if let Some(key) = fields.keys().next() {
        return Err(format!("`place {kind}` takes no `{key}=`"));
    }
    Ok(Placement { weight, slice, row, form })
}

fn parse_io(text: &str) -> Result<Io, String> {
    let mut words = text.split_whitespace();
    let name = words.next().ok_or("empty io line")?.to_string();
    let mut fields = key_values(words)?;
    let (slice, row) = location(fields.remove("at").ok_or("`io` needs `at=`")?)?;
    let width = number(fields.remove("width").ok_or("`io` needs `width=`")?, "width")?;
    let striped = fields.remove("tiles-per-slice").map_or(Ok(0), |n| number(n, "tiles a slice"))?;
    if let Some(key) = fields.keys().next() {
        return Err(format!("`io` takes no `{key}=`"));
    }
    Ok(Io { name, slice, row, width, striped })
}

fn parse_instr(line: &str) -> Result<Instr, String> {
    let mut words = line.split_whitespace();
    let cycle: u64 = number(words.next().ok_or("empty instruction")?, "cycle")?;
    let unit_text = words.next().ok_or("no unit")?;
    let unit = if let Some(i) = unit_text.strip_prefix("MEM") {
        Unit::Mem(number(i, "MEM slice")?)
    } else if let Some(i) = unit_text.strip_prefix("VXM") {
        Unit::Vxm(number(i, "VXM ALU")?)
    } else if let Some(i) = unit_text.strip_prefix("MXM") {
        Unit::Mxm(number(i, "MXM plane")?)
    } else if let Some(i) = unit_text.strip_prefix("LINK") {
        Unit::Link(number(i, "link")?)
    } else {
        return Err(format!("unknown unit `{unit_text}` (MEM<n>, VXM<n>, MXM<n>, LINK<n>)"));
    };
    let name = words.next().ok_or("no operation")?;
    let mut fields = std::collections::BTreeMap::new();
    let (mut inputs, mut outputs) = (Vec::new(), Vec::new());
    for word in words {
        let (key, value) = word.split_once('=').ok_or_else(|| format!("`{word}` is not key=value"))?;
        match key {
            "in" => inputs.push(operand(value)?),
            "out" => outputs.push(operand(value)?),
            _ => {
                if fields.insert(key, value).is_some() {
                    return Err(format!("`{key}` given twice"));
                }
            }
        }
    }
    let mut field = |key: &str| fields.remove(key).ok_or_else(|| format!("`{name}` needs `{key}=`"));
    let op = match name {
        "read" | "write" => {
            let addr = number(field("addr")?, "address")?;
            let stride = match field("stride") {
                Ok(s) => number(s, "stride")?,
                Err(_) => 0,
            };
            if name == "read" {
                Op::Read { addr, stride }
            } else {
                Op::Write { addr, stride }
            }
        }
        "gather" | "scatter" => {
            let (addr, stride, per) = (number(field("addr")?, "address")?, number(field("stride")?, "stride")?, number(field("per")?, "rows per item")?);
            if name == "gather" {
                Op::Gather { addr, stride, per, slices: number(field("slices")?, "slice count")? }
            } else {
                Op::Scatter { addr, stride, per }
            }
        }
        "rowdequant" => Op::RowDequant {
            kind: field("kind")?.parse().map_err(|e: crate::Error| e.to_string())?,
            group: number(field("group")?, "group")?,
            width: number(field("width")?, "width")?,
            per: number(field("per")?, "rows per item")?,
        },
        "norm" => Op::Norm { width: number(field("width")?, "width")?, eps: number(field("eps")?, "epsilon")? },
        "rope" => Op::Rope {
            width: number(field("width")?, "width")?,
            head_dim: number(field("head_dim")?, "head width")?,
            theta: number(field("theta")?, "theta")?,
        },
        "add" | "mul" | "silu" | "swiglu" | "copy" => Op::Elementwise {
            function: match name {
                "add" => RowFunction::Add,
                "mul" => RowFunction::Mul,
                "silu" => RowFunction::Silu,
                "copy" => RowFunction::Copy,
                _ => RowFunction::SwiGlu,
            },
            width: number(field("width")?, "width")?,
        },
        "attention" => Op::Attention {
            heads: number(field("heads")?, "head count")?,
            kv_heads: number(field("kv_heads")?, "key/value head count")?,
            head_dim: number(field("head_dim")?, "head width")?,
            context: number(field("context")?, "context")?,
        },
        "dequant" => Op::Dequant {
            kind: field("kind")?.parse().map_err(|e: crate::Error| e.to_string())?,
            cols: number(field("cols")?, "column count")?,
        },
        "install" => Op::Install { buffer: buffer(field("buffer")?)? },
        "quantize" => Op::Quantize {
            group: number(field("group")?, "group")?,
            width: number(field("width")?, "width")?,
        },
        "multiply" => Op::Multiply {
            buffer: buffer(field("buffer")?)?,
            segments: segments(field("segments")?)?,
        },
        "accumulate" => Op::Accumulate {
            segments: segments(field("segments")?)?,
            groups: number(field("groups")?, "group count")?,
            first: match field("first")? {
                "0" => false,
                "1" => true,
                other => return Err(format!("first=`{other}` is neither 0 nor 1")),
            },
        },
        "send" => Op::Send,
        "recv" => Op::Recv,
        other => return Err(format!("unknown operation `{other}`")),
    };
    if let Some(key) = fields.keys().next() {
        return Err(format!("`{name}` takes no `{key}=`"));
    }
    Ok(Instr { cycle, unit, op, inputs, outputs })
}

impl Program {
    /// Every program of a text holding several one after the other (each
    /// from its header line), e.g. a decode and a prefill program.
    pub fn parse_all(text: &str) -> Result<Vec<Program>, ParseError> {
        let mut starts: Vec<usize> = text.match_indices(PROGRAM_MAGIC).filter(|(i, _)| *i == 0 || text.as_bytes()[i - 1] == b'\n').map(|(i, _)| i).collect();
        if starts.is_empty() {
            starts.push(0);
        }
        let lines_before = |at: usize| text[..at].matches('\n').count();
        let mut programs = Vec::new();
        for (n, &at) in starts.iter().enumerate() {
            let end = starts.get(n + 1).copied().unwrap_or(text.len());
            let part = if n == 0 { &text[..end] } else { &text[at..end] };
            programs.push(part.parse::<Program>().map_err(|e| ParseError { line: e.line + if n == 0 { 0 } else { lines_before(at) }, message: e.message })?);
        }
        Ok(programs)
    }
}

impl std::str::FromStr for Program {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, ParseError> {
        let err = |line: usize, message: String| ParseError { line, message };
        // Comment lines (`//`, `;`) may come before the header.
        let mut lines = text.lines().enumerate().skip_while(|(_, l)| l.starts_with("//") || l.starts_with(';'));
        let (first, header) = lines.next().ok_or_else(|| err(1, "empty program".into()))?;
        let err_first = |m: String| err(first + 1, m);
        if header.starts_with("q35-tsp-program ") && !header.starts_with(PROGRAM_MAGIC) {
            return Err(err_first(format!("`{header}` is another version of the program format than this q35-rt reads (`{PROGRAM_MAGIC}`): compile the model again with this q35c")));
        }
        let lanes = header
            .strip_prefix(PROGRAM_MAGIC)
            .and_then(|rest| rest.trim().strip_prefix("lanes="))
            .ok_or_else(|| err_first(format!("the first line must be `{PROGRAM_MAGIC} lanes=<n>`")))
            .and_then(|n| number::<usize>(n, "lanes").map_err(err_first))?;
        let mut program = Program { lanes, config: None, placements: Vec::new(), io: Vec::new(), tokens: 1, instrs: Vec::new(), dispatches: Vec::new(), chip: 0, chips: 1, first_dispatch: 0 };
        for (i, line) in lines {
            let line = line.trim();
            if line.is_empty() || line.starts_with(';') || line.starts_with("//") {
                continue;
            }
            if let Some(json) = line.strip_prefix("config ") {
                program.config = Some(json.to_string());
            } else if let Some(d) = line.strip_prefix("dispatch ") {
                let d: usize = number(d, "dispatch").map_err(|m| err(i + 1, m))?;
                let next = program.first_dispatch + program.dispatches.len();
                if d != next {
                    return Err(err(i + 1, format!("dispatch {d} where dispatch {next} comes next")));
                }
                program.dispatches.push(program.instrs.len());
            } else if let Some(rest) = line.strip_prefix("chip ") {
                let words: Vec<&str> = rest.split_whitespace().collect();
                let ["of", "first-dispatch"] = [words.get(1).copied().unwrap_or(""), words.get(3).copied().unwrap_or("")] else {
                    return Err(err(i + 1, format!("`chip {rest}` is not `chip <n> of <count> first-dispatch <d>`")));
                };
                program.chip = number(words[0], "chip").map_err(|m| err(i + 1, m))?;
                program.chips = number(words[2], "chip count").map_err(|m| err(i + 1, m))?;
                program.first_dispatch = number(words[4..].first().copied().unwrap_or(""), "dispatch").map_err(|m| err(i + 1, m))?;
                if program.chip >= program.chips || !program.dispatches.is_empty() {
                    return Err(err(i + 1, format!("chip {} of {}: a chip line names one of the chips, before any dispatch", program.chip, program.chips)));
                }
            } else if let Some(n) = line.strip_prefix("tokens ") {
                program.tokens = number(n, "token count").map_err(|m| err(i + 1, m))?;
            } else if let Some(rest) = line.strip_prefix("place ") {
                program.placements.push(parse_placement(rest).map_err(|m| err(i + 1, m))?);
            } else if let Some(rest) = line.strip_prefix("io ") {
                program.io.push(parse_io(rest).map_err(|m| err(i + 1, m))?);
            } else {
                program.instrs.push(parse_instr(line).map_err(|m| err(i + 1, m))?);
            }
        }
        Ok(program)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_and_errors_name_the_line() {
        let text = "q35-tsp-program 2 lanes=320\n\
                    config {\"clock_mhz\":900.0}\n\
                    tokens 1\n\
                    place tile weight=w n0=0 k0=320 cols=256 at=3:7\n\
                    place params weight=w n0=0 k0=320 cols=256 at=4:0\n\
                    place rows weight=emb at=5:0 stride=1\n\
                    place vector weight=g at=6:0\n\
                    io tokens at=1:0 width=1\n\
                    0 MEM3 read addr=7 out=S8:i8@5x140\n\
                    5 VXM1 dequant kind=q35 cols=320 in=S8:i8@0x140 out=S12:i8@144x320\n\
                    149 MXM0 install buffer=0 in=S12:i8@0x320\n\
                    480 MXM0 multiply buffer=0 segments=0:128:0,128:256:1 in=S4:i8@0x1 out=S16:i32@24x2\n\
                    510 MEM4 gather addr=100 stride=2 per=2 slices=1 in=S0:i32@0x1 out=S2:i8@5x4\n\
                    520 VXM3 rowdequant kind=q35 group=128 width=576 per=2 in=S2:i8@0x4 out=S4:f32@8x4\n\
                    530 VXM4 norm width=576 eps=1e-5 in=S4:f32@0x2 in=S8:f32@0x2 out=S12:f32@6x2\n\
                    540 VXM5 rope width=576 head_dim=64 theta=100000.0 in=S4:f32@0x2 in=S0:i32@0x1 out=S12:f32@6x2\n\
                    550 VXM6 swiglu width=1536 in=S4:f32@0x5 in=S8:f32@0x5 out=S12:f32@9x5\n\
                    560 VXM7 attention heads=9 kv_heads=3 head_dim=64 context=512 in=S4:f32@0x2 out=S12:f32@6x2\n\
                    570 MEM5 write addr=3 stride=8 in=S12:f32@0x2\n\
                    504 VXM2 accumulate segments=0:128:0,128:256:1 groups=2 first=1 in=S16:i32@0x2 in=S20:f32@0x4 in=S24:f32@0x1 out=S28:f32@4x1\n";
        let program: Program = text.parse().unwrap();
        assert_eq!(program.instrs.len(), 12);
        assert_eq!(program.to_string(), text);
        assert_eq!(program.cycles(), 570 + 2);
        let bad = text.replace("cols=320", "cols=x");
        assert_eq!(bad.parse::<Program>().unwrap_err().to_string(), "TSP program line 10: column count `x` is not a number in range");
        let bad = text.replace("MXM0 install", "FPU0 install");
        assert!(bad.parse::<Program>().unwrap_err().to_string().starts_with("TSP program line 11: unknown unit `FPU0`"));
        let bad = text.replace("place vector", "place matrix");
        assert!(bad.parse::<Program>().unwrap_err().to_string().starts_with("TSP program line 7: unknown placement `matrix`"));
        let bad = text.replace("S8:i8@5x140", "S8:u8@5x140");
        assert!(bad.parse::<Program>().unwrap_err().to_string().contains("is not S<stream>"));
        let old = text.replace("q35-tsp-program 2", "q35-tsp-program 1");
        assert!(old.parse::<Program>().unwrap_err().to_string().contains("another version of the program format"));
    }

    #[test]
    fn a_chip_of_a_pipeline_names_itself_and_its_first_dispatch() {
        let text = "q35-tsp-program 2 lanes=320\n\
                    tokens 1\n\
                    chip 1 of 3 first-dispatch 12\n\
                    0 LINK0 recv out=S0:f32@0x2\n\
                    dispatch 12\n\
                    9 MEM3 read addr=0 out=S4:f32@5x2\n\
                    14 LINK0 send in=S4:f32@0x2\n";
        let program: Program = text.parse().unwrap();
        assert_eq!((program.chip, program.chips, program.first_dispatch, program.dispatches.clone()), (1, 3, 12, vec![1]));
        assert_eq!(program.to_string(), text);
        let bad = text.replace("\ndispatch 12", "\ndispatch 0");
        assert!(bad.parse::<Program>().unwrap_err().to_string().contains("dispatch 0 where dispatch 12 comes next"));
        let bad = text.replace("chip 1 of 3", "chip 3 of 3");
        assert!(bad.parse::<Program>().unwrap_err().to_string().contains("chip 3 of 3"));
        let bad = text.replace("first-dispatch 12", "first 12");
        assert!(bad.parse::<Program>().unwrap_err().to_string().contains("is not `chip <n> of <count> first-dispatch <d>`"));
    }

    #[test]
    fn scalar_vectors_hold_half_a_vector_of_groups() {
        assert_eq!(scalar_vectors(320, 1), 1);
        assert_eq!(scalar_vectors(320, 160), 1);
        assert_eq!(scalar_vectors(320, 161), 2);
        // Llama-2-70B's down_proj, K = 28672 in groups of 128.
        assert_eq!(scalar_vectors(320, 224), 2);
    }
}
