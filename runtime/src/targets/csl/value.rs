//! The values a CSL program computes with, as the simulator holds them.

use super::ast::Pos;

/// Where a fabric wavelet comes from or goes, seen from a router.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dir {
    North,
    South,
    East,
    West,
    Ramp,
}

impl Dir {
    pub fn name(self) -> &'static str {
        match self {
            Dir::North => "NORTH",
            Dir::South => "SOUTH",
            Dir::East => "EAST",
            Dir::West => "WEST",
            Dir::Ramp => "RAMP",
        }
    }

    /// The direction a wavelet sent this way arrives from at the
    /// neighbour.
    pub fn opposite(self) -> Dir {
        match self {
            Dir::North => Dir::South,
            Dir::South => Dir::North,
            Dir::East => Dir::West,
            Dir::West => Dir::East,
            Dir::Ramp => Dir::Ramp,
        }
    }
}

/// An element type of PE memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Elem {
    F32,
    F16,
    I16,
    U16,
    I32,
    U32,
}

impl Elem {
    pub fn bytes(self) -> usize {
        match self {
            Elem::F16 | Elem::I16 | Elem::U16 => 2,
            _ => 4,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Elem::F32 => "f32",
            Elem::F16 => "f16",
            Elem::I16 => "i16",
            Elem::U16 => "u16",
            Elem::I32 => "i32",
            Elem::U32 => "u32",
        }
    }

    pub fn from_name(name: &str) -> Option<Elem> {
        Some(match name {
            "f32" => Elem::F32,
            "f16" => Elem::F16,
            "i16" => Elem::I16,
            "u16" => Elem::U16,
            "i32" => Elem::I32,
            "u32" => Elem::U32,
            _ => return None,
        })
    }

    pub fn is_float(self) -> bool {
        matches!(self, Elem::F32 | Elem::F16)
    }
}

/// A type a program names.
#[derive(Clone, Debug, PartialEq)]
pub enum Type {
    Scalar(Elem),
    Bool,
    Color,
    Void,
    Other(String),
    Array(Vec<usize>, Elem),
    ManyPointer(Elem),
    Fn,
}

/// A data structure descriptor: memory (an affine walk over an array) or
/// fabric (wavelets of a colour).
#[derive(Clone, Debug, PartialEq)]
pub enum Dsd {
    Mem { array: usize, offset: i64, stride: i64, len: usize },
    FabIn { color: u32, extent: usize },
    FabOut { color: u32, extent: usize },
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Void,
    Int(i64),
    Float(f32),
    Bool(bool),
    Str(String),
    Color(u32),
    Dir(Dir),
    LocalTask(u32),
    Queue(u32),
    Type(Type),
    Struct(Vec<(String, Value)>),
    Tuple(Vec<Value>),
    /// `.name`, e.g. the DSD kind `mem1d_dsd` is an identifier, not this.
    Enum(String),
    /// A PE memory array, by index.
    Array(usize),
    Dsd(Dsd),
    Func(String),
    Task(String),
    /// An imported library: `<memcpy/get_params>` or `<memcpy/memcpy>`.
    Module(String),
    /// A function of a module, bound: `memcpy.get_params`.
    Method(String, String),
}

impl Value {
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Void => "void",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Bool(_) => "a bool",
            Value::Str(_) => "a string",
            Value::Color(_) => "a color",
            Value::Dir(_) => "a direction",
            Value::LocalTask(_) => "a local task id",
            Value::Queue(_) => "a queue",
            Value::Type(_) => "a type",
            Value::Struct(_) => "a struct",
            Value::Tuple(_) => "a tuple",
            Value::Enum(_) => "an enum literal",
            Value::Array(_) => "an array",
            Value::Dsd(_) => "a DSD",
            Value::Func(_) => "a function",
            Value::Task(_) => "a task",
            Value::Module(_) => "a module",
            Value::Method(..) => "a module function",
        }
    }

    pub fn field(&self, name: &str) -> Option<&Value> {
        match self {
            Value::Struct(fields) => fields.iter().find(|(n, _)| n == name).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// An error of a program, where it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    pub pos: Pos,
    pub message: String,
}

impl Fault {
    pub fn at(pos: Pos, message: impl Into<String>) -> Fault {
        Fault { pos, message: message.into() }
    }
}

pub type Eval<T> = Result<T, Fault>;
