//! The syntax tree of the CSL subset q35c emits and the simulator runs:
//! CSL's Zig-like statements and expressions, its file-level `param`,
//! `task`, `comptime` and `layout` blocks, and its tensor accesses
//! (`|i|{n} -> a[i]`). Type names (`f32`, `color`) are identifiers.

/// Where a node starts in its file, 1-based.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

impl std::fmt::Display for Pos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// One `.csl` file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct File {
    pub items: Vec<Item>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    /// `param name: type;` or `param name: type = value;`
    Param { name: String, ty: Expr, default: Option<Expr>, pos: Pos },
    /// A file-level `const` or `var`.
    Decl(Decl),
    /// `fn name(a: T, ...) R { ... }`
    Fn { name: String, params: Vec<(String, Expr)>, ret: Expr, body: Block, pos: Pos },
    /// `task name() void { ... }`
    Task { name: String, body: Block, pos: Pos },
    /// `comptime { ... }`
    Comptime { body: Block, pos: Pos },
    /// `layout { ... }`
    Layout { body: Block, pos: Pos },
}

/// `const name[: type] = init;` or `var name[: type][ = init];`
#[derive(Clone, Debug, PartialEq)]
pub struct Decl {
    pub mutable: bool,
    pub name: String,
    pub ty: Option<Expr>,
    pub init: Option<Expr>,
    pub pos: Pos,
}

pub type Block = Vec<Stmt>;

#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    Decl(Decl),
    /// `target = value;` or `target op= value;` (`op` is the binary
    /// operator of `+=`, `-=`, ...).
    Assign { target: Expr, op: Option<BinOp>, value: Expr, pos: Pos },
    /// An expression as a statement (a call).
    Expr(Expr),
    /// `if (cond) { ... } else { ... }`; `else if` is an `otherwise`
    /// block holding one `If`.
    If { cond: Expr, then: Block, otherwise: Option<Block>, pos: Pos },
    /// `while (cond) : (step) { ... }`; `step` is an assignment or an
    /// expression statement.
    While { cond: Expr, step: Option<Box<Stmt>>, body: Block, pos: Pos },
    Return { value: Option<Expr>, pos: Pos },
    /// `{ ... }`
    Block(Block),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub pos: Pos,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    Ident(String),
    /// `base.name`
    Field(Box<Expr>, String),
    /// `base[i]` or `base[i, j]`
    Index(Box<Expr>, Vec<Expr>),
    /// `callee(args)`
    Call(Box<Expr>, Vec<Expr>),
    /// `@name(args)`, the name without `@`.
    Builtin(String, Vec<Expr>),
    /// `.{ .a = e, .b = f }`
    Struct(Vec<(String, Expr)>),
    /// `.{ A, B }` (also `.{}`)
    Tuple(Vec<Expr>),
    /// `.name`
    EnumLiteral(String),
    Unary(UnOp, Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// `if (cond) a else b`
    If(Box<Expr>, Box<Expr>, Box<Expr>),
    /// `|i, j|{m, n} -> body`
    TensorAccess { indices: Vec<String>, extents: Vec<Expr>, body: Box<Expr> },
    /// `[m]T` or `[m, n]T`
    ArrayType(Vec<Expr>, Box<Expr>),
    /// `[*]T`
    ManyPointerType(Box<Expr>),
    /// `*T`
    PointerType(Box<Expr>),
    /// `&name`
    AddressOf(Box<Expr>),
    /// `fn(A, B) R`
    FnType(Vec<Expr>, Box<Expr>),
    /// `T{ a, b }`, e.g. `[2]color{ c0, c1 }`
    ArrayInit(Box<Expr>, Vec<Expr>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnOp {
    /// `-`
    Neg,
    /// `!`
    Not,
    /// `~`
    BitNot,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Shl,
    Shr,
    BitAnd,
    BitOr,
    BitXor,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// `and`
    And,
    /// `or`
    Or,
}
