//! Runs CSL statements and expressions: the layout file's `layout` block
//! and a PE program's tasks and functions, on one PE's memory. What
//! reaches beyond the PE (routes, tiles, tasks activated, wavelets sent or
//! awaited) is returned as [`Effect`]s, each stamped with the cycle of the
//! PE's clock it happened at, for the fabric to carry out.
//!
//! Cycles: every scalar operation (an arithmetic or logic operator, a
//! load, a store, a call) costs `scalar_op_cycles`; a DSD operation on
//! memory `dsd_cycles_per_element` per element. Arithmetic is CSL's: f32
//! in IEEE single precision, each operation rounded (`@fmacs` multiplies,
//! rounds, then adds and rounds); f16 memory widens exactly to f32;
//! integers are exact (wider than the program's i16: an index past an
//! array is an error, not a wrap).

use super::ast::{BinOp, Block, Decl, Expr, ExprKind, File, Item, Pos, Stmt, UnOp};
use super::value::{Dir, Dsd, Elem, Eval, Fault, Type, Value};
use half::f16;
use std::collections::HashMap;

/// A PE memory array.
#[derive(Clone, Debug)]
pub struct Array {
    pub name: String,
    pub elem: Elem,
    /// Raw bits of each element (f32 bits, f16 bits, integers).
    pub data: Vec<u32>,
}

impl Array {
    pub fn bytes(&self) -> usize {
        self.data.len() * self.elem.bytes()
    }

    fn get(&self, i: usize) -> Value {
        let bits = self.data[i];
        match self.elem {
            Elem::F32 => Value::Float(f32::from_bits(bits)),
            Elem::F16 => Value::Float(f16::from_bits(bits as u16).to_f32()),
            Elem::I16 => Value::Int(i64::from(bits as u16 as i16)),
            Elem::U16 => Value::Int(i64::from(bits as u16)),
            Elem::I32 => Value::Int(i64::from(bits as i32)),
            Elem::U32 => Value::Int(i64::from(bits)),
        }
    }

    pub fn get_f32(&self, i: usize) -> f32 {
        match self.get(i) {
            Value::Float(f) => f,
            Value::Int(n) => n as f32,
            _ => unreachable!("memory holds numbers"),
        }
    }

    fn bits_of(elem: Elem, v: &Value) -> Option<u32> {
        Some(match (elem, v) {
            (Elem::F32, Value::Float(f)) => f.to_bits(),
            (Elem::F32, Value::Int(n)) => (*n as f32).to_bits(),
            (Elem::F16, Value::Float(f)) => u32::from(f16::from_f32(*f).to_bits()),
            (Elem::F16, Value::Int(n)) => u32::from(f16::from_f32(*n as f32).to_bits()),
            (Elem::I16 | Elem::U16, Value::Int(n)) => (*n as u16) as u32,
            (Elem::I32 | Elem::U32, Value::Int(n)) => *n as u32,
            _ => return None,
        })
    }
}

/// What a PE program did that reaches past its PE.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// `@set_rectangle(w, h)`
    Rectangle(usize, usize),
    /// `@set_tile_code(x, y, file, params)`
    TileCode { x: usize, y: usize, file: String, params: Vec<(String, Value)>, pos: Pos },
    /// `@set_color_config(x, y, color, .{ .routes = ... })`
    Route { x: usize, y: usize, color: u32, rx: Vec<Dir>, tx: Vec<Dir>, pos: Pos },
    /// `@export_name(name, type, writable)`
    ExportName { name: String },
    /// `@activate(task)` at `cycle`.
    Activate { task: u32, cycle: u64 },
    /// Wavelets onto the fabric from `cycle`, one a cycle.
    Send { color: u32, values: Vec<u32>, cycle: u64, activate: Option<u32>, pos: Pos },
    /// An operation waiting for `extent` wavelets of `color`: `dest[i] =
    /// op(other[i], wavelet i)` (`other` absent for a move).
    Receive { color: u32, extent: usize, dest: Dsd, other: Option<Dsd>, op: FabricOp, cycle: u64, activate: Option<u32>, pos: Pos },
    /// `unblock_cmd_stream()`: the PE has finished its part.
    Done { cycle: u64 },
}

/// How a received wavelet combines with memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FabricOp {
    Move,
    Add,
}

/// Cycle costs the interpreter charges.
#[derive(Clone, Copy, Debug)]
pub struct Costs {
    pub scalar: u64,
    pub dsd_element: u64,
}

/// FNV-1a: names are short, and the simulator looks one up for nearly
/// every operation.
#[derive(Clone, Copy, Debug)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

pub type Names<V> = HashMap<String, V, std::hash::BuildHasherDefault<Fnv>>;

/// One PE's (or the layout's) state.
#[derive(Clone, Debug, Default)]
pub struct State {
    pub arrays: Vec<Array>,
    pub globals: Names<Value>,
    /// Mutable file-level scalars.
    pub tasks: HashMap<u32, String>,
    /// `@export_symbol`ed names: arrays and functions.
    pub exports: HashMap<String, Value>,
}

/// How deep calls may nest (a runaway recursion is an error, not a crash).
const MAX_DEPTH: usize = 64;

enum Flow {
    Normal,
    Return(Value),
}

/// Evaluates one file's code on `state`.
pub struct Interp<'a> {
    pub file: &'a File,
    pub state: &'a mut State,
    pub costs: Costs,
    /// The PE's clock: the cycle the next operation starts at.
    pub cycle: u64,
    pub effects: Vec<Effect>,
    /// Local names, innermost last; a function sees those from `frame`
    /// on (its parameters and its own), not its caller's.
    locals: Vec<(&'a str, Value)>,
    frame: usize,
    depth: usize,
    /// Bounds a layout's loops and a task's work (no program runs forever).
    pub budget: u64,
}

impl<'a> Interp<'a> {
    pub fn new(file: &'a File, state: &'a mut State, costs: Costs, cycle: u64) -> Self {
        Interp { file, state, costs, cycle, effects: Vec::new(), locals: Vec::new(), frame: 0, depth: 0, budget: u64::MAX }
    }

    fn tick(&mut self, pos: Pos) -> Eval<()> {
        self.cycle += self.costs.scalar;
        if self.budget == 0 {
            return Err(Fault::at(pos, "the program ran past its operation budget (an endless loop?)"));
        }
        self.budget -= 1;
        Ok(())
    }

    /// Declares the file-level items: params from `params` (or their
    /// defaults), consts and vars in order; binds nothing else. Returns
    /// the names of `comptime` blocks' effects through `run_comptime`.
    pub fn declare(&mut self, params: &[(String, Value)]) -> Eval<()> {
        let file = self.file;
        for (name, _) in params {
            if !file.items.iter().any(|i| matches!(i, Item::Param { name: n, .. } if n == name)) {
                return Err(Fault::at(Pos::default(), format!("`.{name}` is given, but the program has no `param {name}`")));
            }
        }
        for item in &file.items {
            match item {
                Item::Param { name, default, pos, .. } => {
                    let value = match params.iter().find(|(n, _)| n == name) {
                        Some((_, v)) => v.clone(),
                        None => match default {
                            Some(e) => self.eval(e)?,
                            None => return Err(Fault::at(*pos, format!("`param {name}` has no value and no default"))),
                        },
                    };
                    self.state.globals.insert(name.clone(), value);
                }
                Item::Decl(decl) => {
                    let value = self.decl_value(decl)?;
                    self.state.globals.insert(decl.name.clone(), value);
                }
                Item::Fn { name, .. } => {
                    self.state.globals.insert(name.clone(), Value::Func(name.clone()));
                }
                Item::Task { name, .. } => {
                    self.state.globals.insert(name.clone(), Value::Task(name.clone()));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Runs every `comptime` block, then every `layout` block.
    pub fn run_blocks(&mut self, layout: bool) -> Eval<()> {
        for item in &self.file.items {
            match item {
                Item::Comptime { body, .. } if !layout => self.block(body).map(|_| ())?,
                Item::Layout { body, .. } if layout => self.block(body).map(|_| ())?,
                _ => {}
            }
        }
        Ok(())
    }

    /// Runs function or task `name` with no arguments.
    pub fn call_named(&mut self, name: &str, pos: Pos) -> Eval<Value> {
        self.call(name, Vec::new(), pos)
    }

    fn decl_value(&mut self, decl: &'a Decl) -> Eval<Value> {
        let ty = match &decl.ty {
            Some(t) => Some(self.eval_type(t)?),
            None => None,
        };
        match (&decl.init, ty) {
            (Some(init), ty) => {
                let v = self.eval(init)?;
                if let Value::Array(i) = v {
                    if self.state.arrays[i].name == "@zeros" {
                        self.state.arrays[i].name = decl.name.clone();
                    }
                }
                Ok(match (ty, v) {
                    (Some(Type::Scalar(Elem::F32 | Elem::F16)), Value::Int(n)) => Value::Float(n as f32),
                    (_, v) => v,
                })
            }
            (None, Some(Type::Array(dims, elem))) => Ok(self.new_array(&decl.name, dims.iter().product(), elem)),
            (None, Some(Type::Scalar(e))) => Ok(if e.is_float() { Value::Float(0.0) } else { Value::Int(0) }),
            (None, Some(Type::Bool)) => Ok(Value::Bool(false)),
            (None, _) => Err(Fault::at(decl.pos, format!("`{}` has neither a value nor a type the simulator can zero", decl.name))),
        }
    }

    fn new_array(&mut self, name: &str, len: usize, elem: Elem) -> Value {
        self.state.arrays.push(Array { name: name.to_string(), elem, data: vec![0; len] });
        Value::Array(self.state.arrays.len() - 1)
    }

    fn lookup(&self, name: &str, pos: Pos) -> Eval<Value> {
        if let Some((_, v)) = self.locals[self.frame..].iter().rev().find(|(n, _)| *n == name) {
            return Ok(v.clone());
        }
        if let Some(v) = self.state.globals.get(name) {
            return Ok(v.clone());
        }
        Ok(match name {
            "f32" | "f16" | "i16" | "u16" | "i32" | "u32" => Value::Type(Type::Scalar(Elem::from_name(name).expect("listed"))),
            "bool" => Value::Type(Type::Bool),
            "color" => Value::Type(Type::Color),
            "void" => Value::Type(Type::Void),
            "comptime_struct" | "local_task_id" | "data_task_id" | "mem1d_dsd" | "fabin_dsd" | "fabout_dsd" => Value::Type(Type::Other(name.to_string())),
            "NORTH" => Value::Dir(Dir::North),
            "SOUTH" => Value::Dir(Dir::South),
            "EAST" => Value::Dir(Dir::East),
            "WEST" => Value::Dir(Dir::West),
            "RAMP" => Value::Dir(Dir::Ramp),
            _ => return Err(Fault::at(pos, format!("`{name}` is not declared"))),
        })
    }

    fn assign_name(&mut self, name: &str, value: Value, pos: Pos) -> Eval<()> {
        let frame = self.frame;
        if let Some(slot) = self.locals[frame..].iter_mut().rev().find(|(n, _)| *n == name) {
            slot.1 = value;
            return Ok(());
        }
        match self.state.globals.get_mut(name) {
            Some(slot @ (Value::Int(_) | Value::Float(_) | Value::Bool(_) | Value::Color(_))) => {
                *slot = value;
                Ok(())
            }
            Some(other) => Err(Fault::at(pos, format!("cannot assign to `{name}`, {}", other.kind()))),
            None => Err(Fault::at(pos, format!("`{name}` is not declared"))),
        }
    }

    fn eval_type(&mut self, e: &'a Expr) -> Eval<Type> {
        match self.eval(e)? {
            Value::Type(t) => Ok(t),
            other => Err(Fault::at(e.pos, format!("expected a type, found {}", other.kind()))),
        }
    }

    fn int(&mut self, e: &'a Expr) -> Eval<i64> {
        match self.eval(e)? {
            Value::Int(n) => Ok(n),
            other => Err(Fault::at(e.pos, format!("expected an integer, found {}", other.kind()))),
        }
    }

    fn block(&mut self, body: &'a Block) -> Eval<Flow> {
        let mark = self.locals.len();
        let result = self.statements(body);
        self.locals.truncate(mark);
        result
    }

    fn statements(&mut self, body: &'a Block) -> Eval<Flow> {
        for stmt in body {
            if let Flow::Return(v) = self.stmt(stmt)? {
                return Ok(Flow::Return(v));
            }
        }
        Ok(Flow::Normal)
    }

    fn stmt(&mut self, stmt: &'a Stmt) -> Eval<Flow> {
        match stmt {
            Stmt::Decl(decl) => {
                let v = self.decl_value(decl)?;
                self.locals.push((decl.name.as_str(), v));
            }
            Stmt::Assign { target, op, value, pos } => {
                let mut v = self.eval(value)?;
                if let Some(op) = op {
                    let old = self.eval(target)?;
                    v = self.binary(*op, old, v, *pos)?;
                }
                self.store(target, v)?;
            }
            Stmt::Expr(e) => {
                self.eval(e)?;
            }
            Stmt::If { cond, then, otherwise, pos } => {
                if self.truth(cond, *pos)? {
                    return self.block(then);
                } else if let Some(otherwise) = otherwise {
                    return self.block(otherwise);
                }
            }
            Stmt::While { cond, step, body, pos } => {
                while self.truth(cond, *pos)? {
                    if let Flow::Return(v) = self.block(body)? {
                        return Ok(Flow::Return(v));
                    }
                    if let Some(step) = step {
                        self.stmt(step)?;
                    }
                }
            }
            Stmt::Return { value, .. } => {
                let v = match value {
                    Some(e) => self.eval(e)?,
                    None => Value::Void,
                };
                return Ok(Flow::Return(v));
            }
            Stmt::Block(body) => return self.block(body),
        }
        Ok(Flow::Normal)
    }

    fn truth(&mut self, cond: &'a Expr, pos: Pos) -> Eval<bool> {
        self.tick(pos)?;
        match self.eval(cond)? {
            Value::Bool(b) => Ok(b),
            other => Err(Fault::at(cond.pos, format!("a condition must be a bool, not {}", other.kind()))),
        }
    }

    fn store(&mut self, target: &'a Expr, v: Value) -> Eval<()> {
        match &target.kind {
            ExprKind::Ident(name) => self.assign_name(name, v, target.pos),
            ExprKind::Index(base, index) => {
                let (array, i) = self.element(base, index, target.pos)?;
                self.tick(target.pos)?;
                let elem = self.state.arrays[array].elem;
                let bits = Array::bits_of(elem, &v).ok_or_else(|| Fault::at(target.pos, format!("cannot store {} in {} memory", v.kind(), elem.name())))?;
                self.state.arrays[array].data[i] = bits;
                Ok(())
            }
            _ => Err(Fault::at(target.pos, "only a name or an array element can be assigned")),
        }
    }

    fn element(&mut self, base: &'a Expr, index: &'a [Expr], pos: Pos) -> Eval<(usize, usize)> {
        let Value::Array(array) = self.eval(base)? else {
            return Err(Fault::at(base.pos, "only an array can be indexed"));
        };
        let [i] = index else {
            return Err(Fault::at(pos, "the simulator indexes one-dimensional arrays only"));
        };
        let i = self.int(i)?;
        let len = self.state.arrays[array].data.len();
        if i < 0 || i as usize >= len {
            let name = &self.state.arrays[array].name;
            return Err(Fault::at(pos, format!("index {i} is outside `{name}` ({len} elements)")));
        }
        Ok((array, i as usize))
    }

    pub fn eval(&mut self, e: &'a Expr) -> Eval<Value> {
        let pos = e.pos;
        Ok(match &e.kind {
            ExprKind::Int(n) => Value::Int(*n),
            ExprKind::Float(f) => Value::Float(*f as f32),
            ExprKind::Bool(b) => Value::Bool(*b),
            ExprKind::Str(s) => Value::Str(s.clone()),
            ExprKind::Ident(name) => self.lookup(name, pos)?,
            ExprKind::EnumLiteral(name) => Value::Enum(name.clone()),
            ExprKind::Field(base, name) => {
                let base = self.eval(base)?;
                match &base {
                    Value::Struct(_) => base.field(name).cloned().ok_or_else(|| Fault::at(pos, format!("the struct has no field `{name}`")))?,
                    Value::Module(m) => Value::Method(m.clone(), name.clone()),
                    other => return Err(Fault::at(pos, format!("{} has no field `{name}`", other.kind()))),
                }
            }
            ExprKind::Index(base, index) => {
                let (array, i) = self.element(base, index, pos)?;
                self.tick(pos)?;
                self.state.arrays[array].get(i)
            }
            ExprKind::Call(callee, args) => {
                let callee = self.eval(callee)?;
                let mut values = Vec::with_capacity(args.len());
                for a in args {
                    values.push(self.eval(a)?);
                }
                self.tick(pos)?;
                match callee {
                    Value::Func(name) => self.call(&name, values, pos)?,
                    Value::Method(module, method) => self.library(&module, &method, values, pos)?,
                    other => return Err(Fault::at(pos, format!("{} cannot be called", other.kind()))),
                }
            }
            ExprKind::Builtin(name, args) => self.builtin(name, args, pos)?,
            ExprKind::Struct(fields) => {
                let mut out = Vec::with_capacity(fields.len());
                for (name, e) in fields {
                    out.push((name.clone(), self.eval(e)?));
                }
                Value::Struct(out)
            }
            ExprKind::Tuple(items) => {
                let mut out = Vec::with_capacity(items.len());
                for e in items {
                    out.push(self.eval(e)?);
                }
                Value::Tuple(out)
            }
            ExprKind::Unary(op, operand) => {
                let v = self.eval(operand)?;
                self.tick(pos)?;
                match (op, v) {
                    (UnOp::Neg, Value::Int(n)) => Value::Int(-n),
                    (UnOp::Neg, Value::Float(f)) => Value::Float(-f),
                    (UnOp::Not, Value::Bool(b)) => Value::Bool(!b),
                    (UnOp::BitNot, Value::Int(n)) => Value::Int(!n),
                    (op, v) => return Err(Fault::at(pos, format!("`{op:?}` does not apply to {}", v.kind()))),
                }
            }
            ExprKind::Binary(op, a, b) => {
                // `and`/`or` short-circuit.
                if matches!(op, BinOp::And | BinOp::Or) {
                    let left = self.truth(a, pos)?;
                    if (*op == BinOp::And) != left {
                        return Ok(Value::Bool(left));
                    }
                    return Ok(Value::Bool(self.truth(b, pos)?));
                }
                let (a, b) = (self.eval(a)?, self.eval(b)?);
                self.tick(pos)?;
                self.binary(*op, a, b, pos)?
            }
            ExprKind::If(cond, a, b) => {
                if self.truth(cond, pos)? {
                    self.eval(a)?
                } else {
                    self.eval(b)?
                }
            }
            ExprKind::ArrayType(dims, elem) => {
                let mut sizes = Vec::with_capacity(dims.len());
                for d in dims {
                    let n = self.int(d)?;
                    if n < 0 {
                        return Err(Fault::at(d.pos, format!("an array of {n} elements")));
                    }
                    sizes.push(n as usize);
                }
                match self.eval_type(elem)? {
                    Type::Scalar(e) => Value::Type(Type::Array(sizes, e)),
                    other => return Err(Fault::at(elem.pos, format!("arrays of {other:?} are not simulated"))),
                }
            }
            ExprKind::ManyPointerType(elem) | ExprKind::PointerType(elem) => match self.eval_type(elem)? {
                Type::Scalar(e) => Value::Type(Type::ManyPointer(e)),
                other => return Err(Fault::at(elem.pos, format!("pointers to {other:?} are not simulated"))),
            },
            ExprKind::FnType(..) => Value::Type(Type::Fn),
            ExprKind::AddressOf(inner) => match self.eval(inner)? {
                v @ Value::Array(_) => v,
                other => return Err(Fault::at(pos, format!("`&` of {} is not simulated", other.kind()))),
            },
            ExprKind::TensorAccess { .. } => return Err(Fault::at(pos, "a tensor access stands only in @get_dsd's `.tensor_access`")),
            ExprKind::ArrayInit(..) => return Err(Fault::at(pos, "array literals are not simulated")),
        })
    }

    fn binary(&mut self, op: BinOp, a: Value, b: Value, pos: Pos) -> Eval<Value> {
        use BinOp::*;
        Ok(match (a, b) {
            (Value::Int(x), Value::Int(y)) => match op {
                Add => Value::Int(x + y),
                Sub => Value::Int(x - y),
                Mul => Value::Int(x.checked_mul(y).ok_or_else(|| Fault::at(pos, "integer overflow"))?),
                Div | Rem if y == 0 => return Err(Fault::at(pos, "division by zero")),
                Div => Value::Int(x / y),
                Rem => Value::Int(x % y),
                Shl | Shr if !(0..63).contains(&y) => return Err(Fault::at(pos, format!("shift by {y}"))),
                Shl => Value::Int(x << y),
                Shr => Value::Int(x >> y),
                BitAnd => Value::Int(x & y),
                BitOr => Value::Int(x | y),
                BitXor => Value::Int(x ^ y),
                And | Or => unreachable!("short-circuited"),
                _ => Value::Bool(compare(op, x, y).expect("a comparison")),
            },
            (Value::Bool(x), Value::Bool(y)) if matches!(op, Eq | Ne) => Value::Bool((x == y) == (op == Eq)),
            (a @ (Value::Float(_) | Value::Int(_)), b @ (Value::Float(_) | Value::Int(_))) => {
                let f = |v: Value| match v {
                    Value::Float(f) => f,
                    Value::Int(n) => n as f32,
                    _ => unreachable!(),
                };
                let (x, y) = (f(a), f(b));
                match op {
                    Add => Value::Float(x + y),
                    Sub => Value::Float(x - y),
                    Mul => Value::Float(x * y),
                    Div => Value::Float(x / y),
                    _ => Value::Bool(compare(op, x, y).ok_or_else(|| Fault::at(pos, format!("`{op:?}` does not apply to floats")))?),
                }
            }
            (a, b) => return Err(Fault::at(pos, format!("`{op:?}` does not apply to {} and {}", a.kind(), b.kind()))),
        })
    }

    fn call(&mut self, name: &str, args: Vec<Value>, pos: Pos) -> Eval<Value> {
        let file = self.file;
        let (params, body) = match file.items.iter().find(|i| matches!(i, Item::Fn { name: n, .. } | Item::Task { name: n, .. } if n == name)) {
            Some(Item::Fn { params, body, .. }) => (params.as_slice(), body),
            Some(Item::Task { body, .. }) => (&[][..], body),
            _ => return Err(Fault::at(pos, format!("no function `{name}`"))),
        };
        if params.len() != args.len() {
            return Err(Fault::at(pos, format!("`{name}` takes {} arguments, given {}", params.len(), args.len())));
        }
        if self.depth >= MAX_DEPTH {
            return Err(Fault::at(pos, format!("calls nest deeper than {MAX_DEPTH}")));
        }
        self.depth += 1;
        // A function sees its parameters and the file's names, not its caller's locals.
        let (saved, base) = (self.frame, self.locals.len());
        self.frame = base;
        self.locals.extend(params.iter().map(|(n, _)| n.as_str()).zip(args));
        let result = self.block(body);
        self.locals.truncate(base);
        self.frame = saved;
        self.depth -= 1;
        Ok(match result? {
            Flow::Return(v) => v,
            Flow::Normal => Value::Void,
        })
    }

    fn library(&mut self, module: &str, method: &str, args: Vec<Value>, pos: Pos) -> Eval<Value> {
        match (module, method) {
            // The memcpy library's parameters of PE column x: opaque here.
            ("<memcpy/get_params>", "get_params") => Ok(Value::Struct(vec![("memcpy_column".into(), args.into_iter().next().unwrap_or(Value::Void))])),
            ("<memcpy/memcpy>", "unblock_cmd_stream") => {
                self.effects.push(Effect::Done { cycle: self.cycle });
                Ok(Value::Void)
            }
            // The math library's f32 functions, correctly rounded or
            // nearly (Rust's, the platform's libm): the PE's own may differ
            // in the last bits.
            ("<math>", "sqrt_f32" | "exp_f32" | "sin_f32" | "cos_f32") => {
                let x = match args.as_slice() {
                    [Value::Float(f)] => *f,
                    [Value::Int(n)] => *n as f32,
                    _ => return Err(Fault::at(pos, format!("math.{method} takes one f32"))),
                };
                // A library call costs as a short routine (chosen).
                self.cycle += 20 * self.costs.scalar;
                Ok(Value::Float(match method {
                    "sqrt_f32" => x.sqrt(),
                    "exp_f32" => x.exp(),
                    "sin_f32" => x.sin(),
                    _ => x.cos(),
                }))
            }
            _ => Err(Fault::at(pos, format!("the library `{module}` has no `{method}` the simulator knows"))),
        }
    }

    fn builtin(&mut self, name: &str, args: &'a [Expr], pos: Pos) -> Eval<Value> {
        // Arguments evaluated lazily: @get_dsd's tensor access is not a value.
        let arg = |i: usize| args.get(i).ok_or_else(|| Fault::at(pos, format!("@{name} needs argument {}", i + 1)));
        match name {
            "as" => {
                let ty = self.eval_type(arg(0)?)?;
                let v = self.eval(arg(1)?)?;
                self.tick(pos)?;
                cast(ty, v).map_err(|m| Fault::at(pos, m))
            }
            "zeros" => match self.eval_type(arg(0)?)? {
                Type::Array(dims, elem) => Ok(self.new_array("@zeros", dims.iter().product(), elem)),
                other => Err(Fault::at(pos, format!("@zeros of {other:?}: an array type is needed"))),
            },
            "get_color" => Ok(Value::Color(self.int(arg(0)?)? as u32)),
            "get_local_task_id" => Ok(Value::LocalTask(self.int(arg(0)?)? as u32)),
            "get_input_queue" | "get_output_queue" => Ok(Value::Queue(self.int(arg(0)?)? as u32)),
            "import_module" => match self.eval(arg(0)?)? {
                Value::Str(path) if ["<memcpy/get_params>", "<memcpy/memcpy>", "<math>"].contains(&path.as_str()) => Ok(Value::Module(path)),
                Value::Str(path) => Err(Fault::at(pos, format!("the simulator has no library `{path}`"))),
                other => Err(Fault::at(pos, format!("@import_module takes a path, not {}", other.kind()))),
            },
            "get_dsd" => self.get_dsd(args, pos),
            "set_rectangle" => {
                let (w, h) = (self.int(arg(0)?)?, self.int(arg(1)?)?);
                if w <= 0 || h <= 0 {
                    return Err(Fault::at(pos, format!("a {w} x {h} rectangle")));
                }
                self.effects.push(Effect::Rectangle(w as usize, h as usize));
                Ok(Value::Void)
            }
            "set_tile_code" => {
                let (x, y) = (self.int(arg(0)?)?, self.int(arg(1)?)?);
                let Value::Str(file) = self.eval(arg(2)?)? else {
                    return Err(Fault::at(pos, "@set_tile_code's third argument is the program's file name"));
                };
                let Value::Struct(params) = self.eval(arg(3)?)? else {
                    return Err(Fault::at(pos, "@set_tile_code's fourth argument is a struct of params"));
                };
                self.effects.push(Effect::TileCode { x: x.max(0) as usize, y: y.max(0) as usize, file, params, pos });
                Ok(Value::Void)
            }
            "set_color_config" => {
                let (x, y) = (self.int(arg(0)?)?, self.int(arg(1)?)?);
                let Value::Color(color) = self.eval(arg(2)?)? else {
                    return Err(Fault::at(pos, "@set_color_config's third argument is a color"));
                };
                let config = self.eval(arg(3)?)?;
                let routes = config.field("routes").ok_or_else(|| Fault::at(pos, "the color config has no `.routes`"))?;
                let dirs = |which: &str| -> Eval<Vec<Dir>> {
                    match routes.field(which) {
                        Some(Value::Tuple(items)) => items
                            .iter()
                            .map(|v| match v {
                                Value::Dir(d) => Ok(*d),
                                other => Err(Fault::at(pos, format!("`.{which}` lists directions, not {}", other.kind()))),
                            })
                            .collect(),
                        _ => Err(Fault::at(pos, format!("the routes have no `.{which}` list"))),
                    }
                };
                let (rx, tx) = (dirs("rx")?, dirs("tx")?);
                self.effects.push(Effect::Route { x: x.max(0) as usize, y: y.max(0) as usize, color, rx, tx, pos });
                Ok(Value::Void)
            }
            "export_name" => {
                let Value::Str(name) = self.eval(arg(0)?)? else {
                    return Err(Fault::at(pos, "@export_name's first argument is a name"));
                };
                self.effects.push(Effect::ExportName { name });
                Ok(Value::Void)
            }
            "export_symbol" => {
                let v = self.eval(arg(0)?)?;
                let name = match (args.get(1), &v) {
                    (Some(e), _) => match self.eval(e)? {
                        Value::Str(s) => s,
                        other => return Err(Fault::at(pos, format!("@export_symbol's name is a string, not {}", other.kind()))),
                    },
                    (None, Value::Func(f)) => f.clone(),
                    (None, _) => return Err(Fault::at(pos, "@export_symbol of data needs a name")),
                };
                self.state.exports.insert(name, v);
                Ok(Value::Void)
            }
            "bind_local_task" => {
                let Value::Task(task) = self.eval(arg(0)?)? else {
                    return Err(Fault::at(pos, "@bind_local_task's first argument is a task"));
                };
                let Value::LocalTask(id) = self.eval(arg(1)?)? else {
                    return Err(Fault::at(pos, "@bind_local_task's second argument is a local task id"));
                };
                if let Some(other) = self.state.tasks.insert(id, task.clone()) {
                    return Err(Fault::at(pos, format!("local task id {id} is bound to `{other}` and `{task}`")));
                }
                Ok(Value::Void)
            }
            "activate" => {
                let Value::LocalTask(id) = self.eval(arg(0)?)? else {
                    return Err(Fault::at(pos, "@activate takes a local task id"));
                };
                self.tick(pos)?;
                self.effects.push(Effect::Activate { task: id, cycle: self.cycle });
                Ok(Value::Void)
            }
            "fmacs" | "fadds" | "fmuls" | "fsubs" | "fmovs" => self.dsd_op(name, args, pos),
            _ => Err(Fault::at(pos, format!("@{name} is not simulated"))),
        }
    }

    fn get_dsd(&mut self, args: &'a [Expr], pos: Pos) -> Eval<Value> {
        let (Some(kind), Some(config)) = (args.first(), args.get(1)) else {
            return Err(Fault::at(pos, "@get_dsd takes a DSD kind and a struct"));
        };
        let ExprKind::Struct(fields) = &config.kind else {
            return Err(Fault::at(config.pos, "@get_dsd's second argument is a struct literal"));
        };
        let field = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, e)| e);
        let kind = match &kind.kind {
            ExprKind::Ident(k) => k.as_str(),
            _ => "",
        };
        match kind {
            "mem1d_dsd" => {
                let access = field("tensor_access").ok_or_else(|| Fault::at(pos, "a mem1d_dsd needs `.tensor_access`"))?;
                let ExprKind::TensorAccess { indices, extents, body } = &access.kind else {
                    return Err(Fault::at(access.pos, "`.tensor_access` is `|i|{n} -> a[...]`"));
                };
                let ([index], [extent]) = (indices.as_slice(), extents.as_slice()) else {
                    return Err(Fault::at(access.pos, "a mem1d_dsd walks one index"));
                };
                let len = self.int(extent)?;
                let ExprKind::Index(base, subscript) = &body.kind else {
                    return Err(Fault::at(body.pos, "the tensor access must index an array"));
                };
                let Value::Array(array) = self.eval(base)? else {
                    return Err(Fault::at(base.pos, "the tensor access must index an array"));
                };
                let [subscript] = subscript.as_slice() else {
                    return Err(Fault::at(body.pos, "the simulator walks one-dimensional arrays"));
                };
                // The subscript is affine in the index: its value at 0, 1, 2.
                let mut at = [0i64; 3];
                for (i, slot) in at.iter_mut().enumerate() {
                    self.locals.push((index.as_str(), Value::Int(i as i64)));
                    let v = self.int(subscript);
                    self.locals.pop();
                    *slot = v?;
                }
                let stride = at[1] - at[0];
                if at[2] - at[1] != stride {
                    return Err(Fault::at(subscript.pos, "the tensor access is not affine in its index"));
                }
                let dsd = Dsd::Mem { array, offset: at[0], stride, len: len.max(0) as usize };
                self.check_dsd(&dsd, pos)?;
                Ok(Value::Dsd(dsd))
            }
            "fabin_dsd" | "fabout_dsd" => {
                let extent = self.int(field("extent").ok_or_else(|| Fault::at(pos, format!("a {kind} needs `.extent`")))?)?;
                let Value::Color(color) = self.eval(field("fabric_color").ok_or_else(|| Fault::at(pos, format!("a {kind} needs `.fabric_color`")))?)? else {
                    return Err(Fault::at(pos, "`.fabric_color` is a color"));
                };
                let extent = extent.max(0) as usize;
                Ok(Value::Dsd(if kind == "fabin_dsd" { Dsd::FabIn { color, extent } } else { Dsd::FabOut { color, extent } }))
            }
            other => Err(Fault::at(pos, format!("DSD kind `{other}` is not simulated"))),
        }
    }

    fn check_dsd(&self, dsd: &Dsd, pos: Pos) -> Eval<()> {
        if let Dsd::Mem { array, offset, stride, len } = *dsd {
            let size = self.state.arrays[array].data.len() as i64;
            let last = offset + stride * (len as i64 - 1).max(0);
            if len > 0 && (offset < 0 || offset >= size || last < 0 || last >= size) {
                let name = &self.state.arrays[array].name;
                return Err(Fault::at(pos, format!("the DSD walks `{name}` from {offset} to {last}, outside its {size} elements")));
            }
        }
        Ok(())
    }

    fn read_dsd(&self, dsd: &Dsd) -> Vec<f32> {
        match *dsd {
            Dsd::Mem { array, offset, stride, len } => (0..len).map(|i| self.state.arrays[array].get_f32((offset + stride * i as i64) as usize)).collect(),
            _ => Vec::new(),
        }
    }

    /// `@fmacs(dest, a, b, s)`, `@fadds(dest, a, b)`, `@fmuls`, `@fsubs`,
    /// `@fmovs(dest, src)`, each with an optional `.{ .async = true,
    /// .activate = task }`.
    fn dsd_op(&mut self, name: &str, args: &'a [Expr], pos: Pos) -> Eval<Value> {
        let operands = if name == "fmovs" { 2 } else if name == "fmacs" { 4 } else { 3 };
        if args.len() != operands && args.len() != operands + 1 {
            return Err(Fault::at(pos, format!("@{name} takes {operands} operands and an optional config")));
        }
        let mut values = Vec::with_capacity(operands);
        for a in &args[..operands] {
            values.push(self.eval(a)?);
        }
        let (mut asynchronous, mut activate) = (false, None);
        if let Some(config) = args.get(operands) {
            let config = self.eval(config)?;
            asynchronous = matches!(config.field("async"), Some(Value::Bool(true)));
            activate = match config.field("activate") {
                Some(Value::LocalTask(id)) => Some(*id),
                Some(other) => return Err(Fault::at(pos, format!("`.activate` takes a local task id, not {}", other.kind()))),
                None => None,
            };
        }
        let Value::Dsd(dest) = values[0].clone() else {
            return Err(Fault::at(pos, format!("@{name}'s destination is a DSD")));
        };
        let fabric = values.iter().any(|v| matches!(v, Value::Dsd(Dsd::FabIn { .. } | Dsd::FabOut { .. })));
        if fabric && !asynchronous {
            return Err(Fault::at(pos, format!("@{name} on the fabric must be `.async = true` here (a blocking fabric operation would stall the simulated PE)")));
        }
        let len = match &dest {
            Dsd::Mem { len, .. } => *len,
            Dsd::FabOut { extent, .. } | Dsd::FabIn { extent, .. } => *extent,
        };
        let start = self.cycle;
        self.cycle += self.costs.scalar;
        match (name, &dest, values.get(1)) {
            // Wavelets out: the source is read now.
            ("fmovs", Dsd::FabOut { color, extent }, Some(Value::Dsd(src @ Dsd::Mem { len, .. }))) => {
                if len != extent {
                    return Err(Fault::at(pos, format!("@fmovs moves {len} elements onto a fabric DSD of {extent}")));
                }
                let values = self.read_dsd(src).iter().map(|f| f.to_bits()).collect();
                self.effects.push(Effect::Send { color: *color, values, cycle: start, activate, pos });
                return Ok(Value::Void);
            }
            ("fmovs", Dsd::Mem { len, .. }, Some(Value::Dsd(Dsd::FabIn { color, extent }))) => {
                if len != extent {
                    return Err(Fault::at(pos, format!("@{name} takes {extent} wavelets into a DSD of {len}")));
                }
                self.effects.push(Effect::Receive { color: *color, extent: *extent, dest: dest.clone(), other: None, op: FabricOp::Move, cycle: start, activate, pos });
                return Ok(Value::Void);
            }
            ("fadds", Dsd::Mem { .. }, Some(Value::Dsd(other @ Dsd::Mem { .. }))) if matches!(values.get(2), Some(Value::Dsd(Dsd::FabIn { .. }))) => {
                let Some(Value::Dsd(Dsd::FabIn { color, extent })) = values.get(2) else { unreachable!() };
                if *extent != len {
                    return Err(Fault::at(pos, format!("@fadds takes {extent} wavelets into a DSD of {len}")));
                }
                self.effects.push(Effect::Receive { color: *color, extent: *extent, dest: dest.clone(), other: Some(other.clone()), op: FabricOp::Add, cycle: start, activate, pos });
                return Ok(Value::Void);
            }
            _ if fabric => return Err(Fault::at(pos, format!("this form of @{name} on the fabric is not simulated"))),
            _ => {}
        }
        // Memory only: element by element, in order.
        let operand = |v: &Value, i: usize, this: &Self| -> Eval<f32> {
            match v {
                Value::Float(f) => Ok(*f),
                Value::Int(n) => Ok(*n as f32),
                Value::Dsd(d @ Dsd::Mem { len: l, .. }) if *l == len => {
                    let Dsd::Mem { array, offset, stride, .. } = *d else { unreachable!() };
                    Ok(this.state.arrays[array].get_f32((offset + stride * i as i64) as usize))
                }
                Value::Dsd(Dsd::Mem { len: l, .. }) => Err(Fault::at(pos, format!("@{name} mixes DSDs of {len} and {l} elements"))),
                other => Err(Fault::at(pos, format!("@{name} takes DSDs and f32 scalars, not {}", other.kind()))),
            }
        };
        let Dsd::Mem { array, offset, stride, .. } = dest else { unreachable!("fabric handled") };
        for i in 0..len {
            let r = match name {
                "fmovs" => operand(&values[1], i, self)?,
                "fadds" => operand(&values[1], i, self)? + operand(&values[2], i, self)?,
                "fsubs" => operand(&values[1], i, self)? - operand(&values[2], i, self)?,
                "fmuls" => operand(&values[1], i, self)? * operand(&values[2], i, self)?,
                _ => {
                    let product = operand(&values[2], i, self)? * operand(&values[3], i, self)?;
                    operand(&values[1], i, self)? + product
                }
            };
            let at = (offset + stride * i as i64) as usize;
            let elem = self.state.arrays[array].elem;
            self.state.arrays[array].data[at] = Array::bits_of(elem, &Value::Float(r)).expect("a float fits float memory");
        }
        self.cycle += self.costs.dsd_element * len as u64;
        if self.budget < len as u64 {
            return Err(Fault::at(pos, "the program ran past its operation budget (an endless loop?)"));
        }
        self.budget -= len as u64;
        if let Some(task) = activate {
            self.effects.push(Effect::Activate { task, cycle: self.cycle });
        }
        Ok(Value::Void)
    }
}

/// `x op y` for a comparison `op`; `None` for any other operator.
fn compare<T: PartialOrd>(op: BinOp, x: T, y: T) -> Option<bool> {
    Some(match op {
        BinOp::Eq => x == y,
        BinOp::Ne => x != y,
        BinOp::Lt => x < y,
        BinOp::Le => x <= y,
        BinOp::Gt => x > y,
        BinOp::Ge => x >= y,
        _ => return None,
    })
}

/// `@as(ty, v)`.
fn cast(ty: Type, v: Value) -> Result<Value, String> {
    Ok(match (ty, v) {
        (Type::Scalar(e), Value::Int(n)) if e.is_float() => Value::Float(if e == Elem::F16 { f16::from_f32(n as f32).to_f32() } else { n as f32 }),
        (Type::Scalar(e), Value::Float(f)) if e.is_float() => Value::Float(if e == Elem::F16 { f16::from_f32(f).to_f32() } else { f }),
        (Type::Scalar(Elem::I16), Value::Int(n)) => Value::Int(i64::from(n as i16)),
        (Type::Scalar(Elem::U16), Value::Int(n)) => Value::Int(i64::from(n as u16)),
        (Type::Scalar(Elem::I32), Value::Int(n)) => Value::Int(i64::from(n as i32)),
        (Type::Scalar(Elem::U32), Value::Int(n)) => Value::Int(i64::from(n as u32)),
        (Type::Scalar(e), Value::Float(f)) => Value::Int(match e {
            Elem::I16 => i64::from(f as i16),
            Elem::U16 => i64::from(f as u16),
            Elem::I32 => i64::from(f as i32),
            _ => i64::from(f as u32),
        }),
        (ty, v) => return Err(format!("@as({ty:?}, {}) is not simulated", v.kind())),
    })
}
