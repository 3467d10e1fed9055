//! A thin layer over melior's arith/memref/scf builders for writing kernel
//! bodies: every call appends one op to a block and returns its result, so
//! kernel code reads like the loop nest it builds.

use melior::{
    dialect::{arith, memref, scf},
    ir::{
        attribute::{FloatAttribute, IntegerAttribute},
        block::BlockLike,
        operation::OperationBuilder,
        r#type::IntegerType,
        Block, Location, Operation, Region, RegionLike, Type, Value, ValueLike,
    },
    Context,
};

/// Kernels take (workgroup, tokens, start) before their buffers.
pub const FIRST_BUFFER: usize = 3;

/// Builds ops at `location` in `context`.
#[derive(Clone, Copy)]
pub struct Builder<'c> {
    pub context: &'c Context,
    pub location: Location<'c>,
}

/// Appends `op` to `block` and returns its first result.
pub fn push<'c, 'b>(block: &'b Block<'c>, op: Operation<'c>) -> Value<'c, 'b> {
    block
        .append_operation(op)
        .result(0)
        .expect("op built with one result")
        .into()
}

pub fn arg<'c, 'b>(block: &'b Block<'c>, index: usize) -> Value<'c, 'b> {
    block.argument(index).expect("block argument exists").into()
}

impl<'c> Builder<'c> {
    pub fn index_type(&self) -> Type<'c> {
        Type::index(self.context)
    }

    pub fn f32_type(&self) -> Type<'c> {
        Type::float32(self.context)
    }

    pub fn int_type(&self, bits: u32) -> Type<'c> {
        IntegerType::new(self.context, bits).into()
    }

    pub fn index<'b>(&self, block: &'b Block<'c>, value: i64) -> Value<'c, 'b> {
        push(
            block,
            arith::constant(
                self.context,
                IntegerAttribute::new(self.index_type(), value).into(),
                self.location,
            ),
        )
    }

    pub fn int<'b>(&self, block: &'b Block<'c>, bits: u32, value: i64) -> Value<'c, 'b> {
        push(
            block,
            arith::constant(
                self.context,
                IntegerAttribute::new(self.int_type(bits), value).into(),
                self.location,
            ),
        )
    }

    pub fn f32<'b>(&self, block: &'b Block<'c>, value: f64) -> Value<'c, 'b> {
        push(
            block,
            arith::constant(
                self.context,
                FloatAttribute::new(self.context, self.f32_type(), value).into(),
                self.location,
            ),
        )
    }

    pub fn load<'b>(&self, block: &'b Block<'c>, memref: Value<'c, '_>, indices: &[Value<'c, '_>]) -> Value<'c, 'b> {
        push(block, memref::load(memref, indices, self.location))
    }

    pub fn store(&self, block: &Block<'c>, value: Value<'c, '_>, memref: Value<'c, '_>, indices: &[Value<'c, '_>]) {
        block.append_operation(memref::store(value, memref, indices, self.location));
    }

    pub fn addf<'b>(&self, block: &'b Block<'c>, a: Value<'c, '_>, b: Value<'c, '_>) -> Value<'c, 'b> {
        push(block, arith::addf(a, b, self.location))
    }

    pub fn subf<'b>(&self, block: &'b Block<'c>, a: Value<'c, '_>, b: Value<'c, '_>) -> Value<'c, 'b> {
        push(block, arith::subf(a, b, self.location))
    }

    pub fn mulf<'b>(&self, block: &'b Block<'c>, a: Value<'c, '_>, b: Value<'c, '_>) -> Value<'c, 'b> {
        push(block, arith::mulf(a, b, self.location))
    }

    pub fn divf<'b>(&self, block: &'b Block<'c>, a: Value<'c, '_>, b: Value<'c, '_>) -> Value<'c, 'b> {
        push(block, arith::divf(a, b, self.location))
    }

    pub fn maxf<'b>(&self, block: &'b Block<'c>, a: Value<'c, '_>, b: Value<'c, '_>) -> Value<'c, 'b> {
        push(block, arith::maxnumf(a, b, self.location))
    }

    pub fn negf<'b>(&self, block: &'b Block<'c>, a: Value<'c, '_>) -> Value<'c, 'b> {
        push(block, arith::negf(a, self.location))
    }

    pub fn addi<'b>(&self, block: &'b Block<'c>, a: Value<'c, '_>, b: Value<'c, '_>) -> Value<'c, 'b> {
        push(block, arith::addi(a, b, self.location))
    }

    pub fn subi<'b>(&self, block: &'b Block<'c>, a: Value<'c, '_>, b: Value<'c, '_>) -> Value<'c, 'b> {
        push(block, arith::subi(a, b, self.location))
    }

    pub fn muli<'b>(&self, block: &'b Block<'c>, a: Value<'c, '_>, b: Value<'c, '_>) -> Value<'c, 'b> {
        push(block, arith::muli(a, b, self.location))
    }

    pub fn divui<'b>(&self, block: &'b Block<'c>, a: Value<'c, '_>, b: Value<'c, '_>) -> Value<'c, 'b> {
        push(block, arith::divui(a, b, self.location))
    }

    pub fn remui<'b>(&self, block: &'b Block<'c>, a: Value<'c, '_>, b: Value<'c, '_>) -> Value<'c, 'b> {
        push(block, arith::remui(a, b, self.location))
    }

    pub fn minui<'b>(&self, block: &'b Block<'c>, a: Value<'c, '_>, b: Value<'c, '_>) -> Value<'c, 'b> {
        push(block, arith::minui(a, b, self.location))
    }

    pub fn andi<'b>(&self, block: &'b Block<'c>, a: Value<'c, '_>, b: Value<'c, '_>) -> Value<'c, 'b> {
        push(block, arith::andi(a, b, self.location))
    }

    pub fn ori<'b>(&self, block: &'b Block<'c>, a: Value<'c, '_>, b: Value<'c, '_>) -> Value<'c, 'b> {
        push(block, arith::ori(a, b, self.location))
    }

    pub fn xori<'b>(&self, block: &'b Block<'c>, a: Value<'c, '_>, b: Value<'c, '_>) -> Value<'c, 'b> {
        push(block, arith::xori(a, b, self.location))
    }

    pub fn shrui<'b>(&self, block: &'b Block<'c>, a: Value<'c, '_>, b: Value<'c, '_>) -> Value<'c, 'b> {
        push(block, arith::shrui(a, b, self.location))
    }

    pub fn shli<'b>(&self, block: &'b Block<'c>, a: Value<'c, '_>, b: Value<'c, '_>) -> Value<'c, 'b> {
        push(block, arith::shli(a, b, self.location))
    }

    /// Unsigned integer (any width) to f32.
    pub fn uitofp<'b>(&self, block: &'b Block<'c>, a: Value<'c, '_>) -> Value<'c, 'b> {
        push(block, arith::uitofp(a, self.f32_type(), self.location))
    }

    pub fn sitofp<'b>(&self, block: &'b Block<'c>, a: Value<'c, '_>) -> Value<'c, 'b> {
        push(block, arith::sitofp(a, self.f32_type(), self.location))
    }

    pub fn extf<'b>(&self, block: &'b Block<'c>, a: Value<'c, '_>) -> Value<'c, 'b> {
        push(block, arith::extf(a, self.f32_type(), self.location))
    }

    pub fn extui<'b>(&self, block: &'b Block<'c>, a: Value<'c, '_>, bits: u32) -> Value<'c, 'b> {
        push(block, arith::extui(a, self.int_type(bits), self.location))
    }

    pub fn trunci<'b>(&self, block: &'b Block<'c>, a: Value<'c, '_>, bits: u32) -> Value<'c, 'b> {
        push(block, arith::trunci(a, self.int_type(bits), self.location))
    }

    pub fn index_cast<'b>(&self, block: &'b Block<'c>, a: Value<'c, '_>, to: Type<'c>) -> Value<'c, 'b> {
        push(block, arith::index_cast(a, to, self.location))
    }

    /// A `math` dialect op of one f32 operand (`math.exp`, `math.sqrt`, ...).
    pub fn math1<'b>(&self, block: &'b Block<'c>, name: &str, a: Value<'c, '_>) -> Value<'c, 'b> {
        push(
            block,
            OperationBuilder::new(&format!("math.{name}"), self.location)
                .add_operands(&[a])
                .add_results(&[a.r#type()])
                .build()
                .expect("valid math op"),
        )
    }

    /// `math.fma a, b, c` = a * b + c.
    pub fn fma<'b>(&self, block: &'b Block<'c>, a: Value<'c, '_>, b: Value<'c, '_>, c: Value<'c, '_>) -> Value<'c, 'b> {
        push(
            block,
            OperationBuilder::new("math.fma", self.location)
                .add_operands(&[a, b, c])
                .add_results(&[a.r#type()])
                .build()
                .expect("valid math.fma"),
        )
    }

    /// `memref.dim %m, index`.
    pub fn dim<'b>(&self, block: &'b Block<'c>, memref: Value<'c, '_>, index: i64) -> Value<'c, 'b> {
        let i = self.index(block, index);
        push(block, memref::dim(memref, i, self.location))
    }

    /// The body of an `scf.for` with `carried` loop-carried values: block
    /// arguments are the induction variable, then the carried values.
    pub fn loop_body(&self, carried: &[Type<'c>]) -> Block<'c> {
        let mut args = vec![(self.index_type(), self.location)];
        args.extend(carried.iter().map(|&t| (t, self.location)));
        Block::new(&args)
    }

    /// Ends a loop body with `scf.yield`.
    pub fn yield_(&self, body: &Block<'c>, values: &[Value<'c, '_>]) {
        body.append_operation(scf::r#yield(values, self.location));
    }

    /// Appends `scf.for` over `[lower, upper)` by `step` with a finished
    /// `body` (ending in `scf.yield`); returns the op (results = carried).
    pub fn for_op<'b>(
        &self,
        block: &'b Block<'c>,
        lower: Value<'c, '_>,
        upper: Value<'c, '_>,
        step: Value<'c, '_>,
        init: &[Value<'c, '_>],
        body: Block<'c>,
    ) -> melior::ir::OperationRef<'c, 'b> {
        let region = Region::new();
        region.append_block(body);
        let mut operands = vec![lower, upper, step];
        operands.extend_from_slice(init);
        let types: Vec<Type> = init.iter().map(|v| v.r#type()).collect();
        block.append_operation(
            OperationBuilder::new("scf.for", self.location)
                .add_operands(&operands)
                .add_results(&types)
                .add_regions([region])
                .build()
                .expect("valid scf.for"),
        )
    }
}

impl<'c> Builder<'c> {
    pub fn f64_type(&self) -> Type<'c> {
        Type::float64(self.context)
    }

    pub fn f64<'b>(&self, block: &'b Block<'c>, value: f64) -> Value<'c, 'b> {
        push(
            block,
            arith::constant(
                self.context,
                FloatAttribute::new(self.context, self.f64_type(), value).into(),
                self.location,
            ),
        )
    }

    /// Signed integer to a float type.
    pub fn sitofp_to<'b>(&self, block: &'b Block<'c>, a: Value<'c, '_>, to: Type<'c>) -> Value<'c, 'b> {
        push(block, arith::sitofp(a, to, self.location))
    }

    /// f64 to f32, round to nearest even.
    pub fn truncf<'b>(&self, block: &'b Block<'c>, a: Value<'c, '_>) -> Value<'c, 'b> {
        push(block, arith::truncf(a, self.f32_type(), self.location))
    }

    pub fn memref_type(&self, text: &str) -> Type<'c> {
        Type::parse(self.context, text).unwrap_or_else(|| panic!("invalid memref type {text}"))
    }

    /// `memref.alloca() : memref<N x f32>`: kernel scratch on the stack.
    pub fn alloca_f32<'b>(&self, block: &'b Block<'c>, len: usize) -> Value<'c, 'b> {
        self.alloca(block, &format!("memref<{len}xf32>"), &[])
    }

    /// `memref.alloca(sizes) : ty`, one size per dynamic dimension of `ty`.
    pub fn alloca<'b>(&self, block: &'b Block<'c>, ty: &str, sizes: &[Value<'c, '_>]) -> Value<'c, 'b> {
        push(
            block,
            OperationBuilder::new("memref.alloca", self.location)
                .add_operands(sizes)
                .add_results(&[self.memref_type(ty)])
                .add_attributes(&[(
                    melior::ir::Identifier::new(self.context, "operandSegmentSizes"),
                    melior::ir::attribute::DenseI32ArrayAttribute::new(self.context, &[sizes.len() as i32, 0]).into(),
                )])
                .build()
                .expect("valid memref.alloca"),
        )
    }
}

/// One dimension of a strided view: known when the kernel is built, or an
/// `index` value.
#[derive(Clone, Copy)]
pub enum Extent<'c, 'a> {
    Fixed(usize),
    Dynamic(Value<'c, 'a>),
}

/// Linalg on memrefs: structured ops whose loops upstream
/// `convert-linalg-to-loops` writes.
impl<'c> Builder<'c> {
    /// `memref.reinterpret_cast` of the 1-D or row-major `source` to the
    /// view `sizes` x `strides` (in elements) at element `offset`: how a
    /// kernel addresses a packed weight's rows, groups and planes as an
    /// array without copying.
    pub fn view<'b>(&self, block: &'b Block<'c>, source: Value<'c, '_>, offset: Value<'c, '_>, sizes: &[Extent<'c, '_>], strides: &[usize], element: &str) -> Value<'c, 'b> {
        const DYNAMIC: i64 = i64::MIN;
        let mut operands = vec![source, offset];
        let mut static_sizes = Vec::new();
        let mut shape = Vec::new();
        for size in sizes {
            match *size {
                Extent::Fixed(n) => {
                    static_sizes.push(n as i64);
                    shape.push(n.to_string());
                }
                Extent::Dynamic(v) => {
                    operands.push(v);
                    static_sizes.push(DYNAMIC);
                    shape.push("?".into());
                }
            }
        }
        let strides_text: Vec<String> = strides.iter().map(usize::to_string).collect();
        let ty = self.memref_type(&format!("memref<{}x{element}, strided<[{}], offset: ?>>", shape.join("x"), strides_text.join(", ")));
        let dense = |values: &[i64]| melior::ir::attribute::DenseI64ArrayAttribute::new(self.context, values).into();
        let strides_i64: Vec<i64> = strides.iter().map(|&s| s as i64).collect();
        let dynamic_sizes = (operands.len() - 2) as i32;
        push(
            block,
            OperationBuilder::new("memref.reinterpret_cast", self.location)
                .add_operands(&operands)
                .add_results(&[ty])
                .add_attributes(&[
                    (melior::ir::Identifier::new(self.context, "static_offsets"), dense(&[DYNAMIC])),
                    (melior::ir::Identifier::new(self.context, "static_sizes"), dense(&static_sizes)),
                    (melior::ir::Identifier::new(self.context, "static_strides"), dense(&strides_i64)),
                    (
                        melior::ir::Identifier::new(self.context, "operandSegmentSizes"),
                        melior::ir::attribute::DenseI32ArrayAttribute::new(self.context, &[1, 1, dynamic_sizes, 0]).into(),
                    ),
                ])
                .build()
                .expect("valid memref.reinterpret_cast"),
        )
    }

    /// `linalg.generic` on memrefs: loops `iterators` ("parallel" or
    /// "reduction"), operand i at `maps[i]` of the loop indices (affine map
    /// text such as `(d0, d1, d2) -> (d0, d2)`), inputs then outputs.
    /// `body` gets the region's block (one argument per operand, its
    /// element) and returns the outputs' new elements.
    pub fn generic(
        &self,
        block: &Block<'c>,
        inputs: &[Value<'c, '_>],
        outputs: &[Value<'c, '_>],
        maps: &[String],
        iterators: &[&str],
        body: impl for<'b> FnOnce(&'b Block<'c>) -> Vec<Value<'c, 'b>>,
    ) {
        let element = |v: &Value<'c, '_>| {
            melior::ir::r#type::MemRefType::try_from(v.r#type())
                .map(|m| melior::ir::ShapedTypeLike::element(&m))
                .expect("linalg.generic operands are memrefs")
        };
        let args: Vec<(Type<'c>, Location<'c>)> = inputs.iter().chain(outputs).map(|v| (element(v), self.location)).collect();
        let region_block = Block::new(&args);
        {
            let yielded = body(&region_block);
            region_block.append_operation(
                OperationBuilder::new("linalg.yield", self.location)
                    .add_operands(&yielded)
                    .build()
                    .expect("valid linalg.yield"),
            );
        }
        let region = Region::new();
        region.append_block(region_block);
        let maps_text: Vec<String> = maps.iter().map(|m| format!("affine_map<{m}>")).collect();
        let iterators_text: Vec<String> = iterators.iter().map(|i| format!("#linalg.iterator_type<{i}>")).collect();
        let parse = |text: String| melior::ir::Attribute::parse(self.context, &text).unwrap_or_else(|| panic!("invalid attribute {text}"));
        let operands: Vec<Value> = inputs.iter().chain(outputs).copied().collect();
        block.append_operation(
            OperationBuilder::new("linalg.generic", self.location)
                .add_operands(&operands)
                .add_attributes(&[
                    (melior::ir::Identifier::new(self.context, "indexing_maps"), parse(format!("[{}]", maps_text.join(", ")))),
                    (melior::ir::Identifier::new(self.context, "iterator_types"), parse(format!("[{}]", iterators_text.join(", ")))),
                    (
                        melior::ir::Identifier::new(self.context, "operandSegmentSizes"),
                        melior::ir::attribute::DenseI32ArrayAttribute::new(self.context, &[inputs.len() as i32, outputs.len() as i32]).into(),
                    ),
                ])
                .add_regions([region])
                .build()
                .expect("valid linalg.generic"),
        );
    }

    /// `arith.cmpi` with `predicate` (`eq`, `ult`, ...).
    pub fn cmpi<'b>(&self, block: &'b Block<'c>, predicate: &str, a: Value<'c, '_>, b: Value<'c, '_>) -> Value<'c, 'b> {
        let predicate = match predicate {
            "eq" => arith::CmpiPredicate::Eq,
            "ult" => arith::CmpiPredicate::Ult,
            "ule" => arith::CmpiPredicate::Ule,
            other => panic!("unsupported cmpi predicate {other}"),
        };
        push(block, arith::cmpi(self.context, predicate, a, b, self.location))
    }

    /// `arith.select`: `yes` where `condition`, else `no`.
    pub fn select<'b>(&self, block: &'b Block<'c>, condition: Value<'c, '_>, yes: Value<'c, '_>, no: Value<'c, '_>) -> Value<'c, 'b> {
        push(block, arith::select(condition, yes, no, self.location))
    }

    /// `linalg.index`: the current index of loop `dim` inside a
    /// `linalg.generic` body.
    pub fn loop_index<'b>(&self, block: &'b Block<'c>, dim: usize) -> Value<'c, 'b> {
        push(
            block,
            OperationBuilder::new("linalg.index", self.location)
                .add_attributes(&[(melior::ir::Identifier::new(self.context, "dim"), IntegerAttribute::new(self.int_type(64), dim as i64).into())])
                .add_results(&[self.index_type()])
                .build()
                .expect("valid linalg.index"),
        )
    }
}

/// Vector and pointer helpers for hand-vectorized kernels. Vectors are
/// builtin `vector<N x T>` values, so `arith` and `math` ops apply to them
/// directly (the arith/math-to-LLVM conversions handle 1-D vectors); the
/// few things those dialects lack (loads through a byte address, shuffles,
/// splats, reductions, target intrinsics) are LLVM dialect ops, which the
/// CPU pipeline passes through unchanged.
impl<'c> Builder<'c> {
    /// `vector<lanes x elem>`, `elem` as MLIR spells it (`f32`, `i8`, ...).
    pub fn vector_type(&self, lanes: usize, elem: &str) -> Type<'c> {
        Type::parse(self.context, &format!("vector<{lanes}x{elem}>")).expect("valid vector type")
    }

    pub fn ptr_type(&self) -> Type<'c> {
        Type::parse(self.context, "!llvm.ptr").expect("valid pointer type")
    }

    /// `arith.constant dense<[values]> : vector<N x elem>`.
    pub fn dense<'b, T: std::fmt::Display>(&self, block: &'b Block<'c>, elem: &str, values: &[T]) -> Value<'c, 'b> {
        let list: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        let text = format!("dense<[{}]> : vector<{}x{elem}>", list.join(", "), values.len());
        let attr = melior::ir::Attribute::parse(self.context, &text).expect("valid dense constant");
        push(block, arith::constant(self.context, attr, self.location))
    }

    /// The address of a memref's first element as an i64 (the memref must
    /// have offset 0, as every kernel buffer does).
    pub fn address<'b>(&self, block: &'b Block<'c>, memref: Value<'c, '_>) -> Value<'c, 'b> {
        let index = push(
            block,
            OperationBuilder::new("memref.extract_aligned_pointer_as_index", self.location)
                .add_operands(&[memref])
                .add_results(&[self.index_type()])
                .build()
                .expect("valid memref.extract_aligned_pointer_as_index"),
        );
        self.index_cast(block, index, self.int_type(64))
    }

    fn pointer<'b>(&self, block: &'b Block<'c>, address: Value<'c, '_>) -> Value<'c, 'b> {
        push(
            block,
            OperationBuilder::new("llvm.inttoptr", self.location)
                .add_operands(&[address])
                .add_results(&[self.ptr_type()])
                .build()
                .expect("valid llvm.inttoptr"),
        )
    }

    fn memory_attributes(&self, align: usize) -> [(melior::ir::Identifier<'c>, melior::ir::Attribute<'c>); 2] {
        let i64_type = self.int_type(64);
        [
            (
                melior::ir::Identifier::new(self.context, "alignment"),
                IntegerAttribute::new(i64_type, align as i64).into(),
            ),
            (
                melior::ir::Identifier::new(self.context, "ordering"),
                IntegerAttribute::new(i64_type, 0).into(),
            ),
        ]
    }

    /// Loads a value of type `ty` from the byte address `address` (i64),
    /// assuming `align`-byte alignment.
    pub fn load_at<'b>(&self, block: &'b Block<'c>, address: Value<'c, '_>, ty: Type<'c>, align: usize) -> Value<'c, 'b> {
        let ptr = self.pointer(block, address);
        push(
            block,
            OperationBuilder::new("llvm.load", self.location)
                .add_operands(&[ptr])
                .add_results(&[ty])
                .add_attributes(&self.memory_attributes(align))
                .build()
                .expect("valid llvm.load"),
        )
    }

    /// Stores `value` at the byte address `address` (i64).
    pub fn store_at(&self, block: &Block<'c>, value: Value<'c, '_>, address: Value<'c, '_>, align: usize) {
        let ptr = self.pointer(block, address);
        block.append_operation(
            OperationBuilder::new("llvm.store", self.location)
                .add_operands(&[value, ptr])
                .add_attributes(&self.memory_attributes(align))
                .build()
                .expect("valid llvm.store"),
        );
    }

    /// `llvm.shufflevector a, b [mask]`: lane i of the result is lane
    /// mask[i] of the concatenation a ++ b; `result` is its vector type.
    pub fn shuffle<'b>(&self, block: &'b Block<'c>, a: Value<'c, '_>, b: Value<'c, '_>, mask: &[i32], result: Type<'c>) -> Value<'c, 'b> {
        push(
            block,
            OperationBuilder::new("llvm.shufflevector", self.location)
                .add_operands(&[a, b])
                .add_results(&[result])
                .add_attributes(&[(
                    melior::ir::Identifier::new(self.context, "mask"),
                    melior::ir::attribute::DenseI32ArrayAttribute::new(self.context, mask).into(),
                )])
                .build()
                .expect("valid llvm.shufflevector"),
        )
    }

    /// `llvm.intr.prefetch` of the byte address `address` (i64) for reading.
    pub fn prefetch(&self, block: &Block<'c>, address: Value<'c, '_>) {
        let ptr = self.pointer(block, address);
        let i32_attr = |v: i64| -> melior::ir::Attribute<'c> { IntegerAttribute::new(self.int_type(32), v).into() };
        block.append_operation(
            OperationBuilder::new("llvm.intr.prefetch", self.location)
                .add_operands(&[ptr])
                .add_attributes(&[
                    (melior::ir::Identifier::new(self.context, "rw"), i32_attr(0)),
                    (melior::ir::Identifier::new(self.context, "hint"), i32_attr(3)),
                    (melior::ir::Identifier::new(self.context, "cache"), i32_attr(1)),
                ])
                .build()
                .expect("valid llvm.intr.prefetch"),
        );
    }

    /// `llvm.bitcast`: the same bits as another type (vector shapes may differ).
    pub fn bitcast<'b>(&self, block: &'b Block<'c>, value: Value<'c, '_>, to: Type<'c>) -> Value<'c, 'b> {
        push(
            block,
            OperationBuilder::new("llvm.bitcast", self.location)
                .add_operands(&[value])
                .add_results(&[to])
                .build()
                .expect("valid llvm.bitcast"),
        )
    }

    /// A `vector<lanes x f32>` with every lane `scalar`.
    pub fn splat<'b>(&self, block: &'b Block<'c>, scalar: Value<'c, '_>, lanes: usize) -> Value<'c, 'b> {
        self.splat_of(block, scalar, lanes, "f32")
    }

    /// `llvm.intr.masked.load`: the lanes of `mask` from `address` (i64),
    /// zero elsewhere; masked-off lanes are never read.
    pub fn masked_load<'b>(&self, block: &'b Block<'c>, address: Value<'c, '_>, mask: Value<'c, '_>, ty: Type<'c>, align: usize) -> Value<'c, 'b> {
        let ptr = self.pointer(block, address);
        let zero = push(
            block,
            OperationBuilder::new("llvm.mlir.zero", self.location)
                .add_results(&[ty])
                .build()
                .expect("valid llvm.mlir.zero"),
        );
        push(
            block,
            OperationBuilder::new("llvm.intr.masked.load", self.location)
                .add_operands(&[ptr, mask, zero])
                .add_results(&[ty])
                .add_attributes(&[(
                    melior::ir::Identifier::new(self.context, "alignment"),
                    IntegerAttribute::new(self.int_type(32), align as i64).into(),
                )])
                .build()
                .expect("valid llvm.intr.masked.load"),
        )
    }

    /// A `vector<lanes x elem>` with every lane `scalar` (of type `elem`).
    pub fn splat_of<'b>(&self, block: &'b Block<'c>, scalar: Value<'c, '_>, lanes: usize, elem: &str) -> Value<'c, 'b> {
        let ty = self.vector_type(lanes, elem);
        let poison = push(
            block,
            OperationBuilder::new("llvm.mlir.poison", self.location)
                .add_results(&[ty])
                .build()
                .expect("valid llvm.mlir.poison"),
        );
        let zero = self.int(block, 32, 0);
        let first = push(
            block,
            OperationBuilder::new("llvm.insertelement", self.location)
                .add_operands(&[poison, scalar, zero])
                .add_results(&[ty])
                .build()
                .expect("valid llvm.insertelement"),
        );
        self.shuffle(block, first, poison, &vec![0; lanes], ty)
    }

    /// A call of the LLVM intrinsic `name` (for example a target's permute).
    pub fn intrinsic<'b>(&self, block: &'b Block<'c>, name: &str, args: &[Value<'c, '_>], result: Type<'c>) -> Value<'c, 'b> {
        push(
            block,
            OperationBuilder::new("llvm.call_intrinsic", self.location)
                .add_operands(args)
                .add_results(&[result])
                .add_attributes(&[
                    (
                        melior::ir::Identifier::new(self.context, "intrin"),
                        melior::ir::attribute::StringAttribute::new(self.context, name).into(),
                    ),
                    (
                        melior::ir::Identifier::new(self.context, "fastmathFlags"),
                        melior::ir::Attribute::parse(self.context, "#llvm.fastmath<none>").expect("valid fastmath"),
                    ),
                    (
                        melior::ir::Identifier::new(self.context, "op_bundle_sizes"),
                        melior::ir::attribute::DenseI32ArrayAttribute::new(self.context, &[]).into(),
                    ),
                    (
                        melior::ir::Identifier::new(self.context, "operandSegmentSizes"),
                        melior::ir::attribute::DenseI32ArrayAttribute::new(self.context, &[args.len() as i32, 0]).into(),
                    ),
                ])
                .build()
                .expect("valid llvm.call_intrinsic"),
        )
    }

    /// The lane sums of `vectors` (each a `vector<16xf32>`), four at a time
    /// through one shuffle tree: three vector adds per level shared by the
    /// four, where four separate reductions take four apiece. The sums
    /// are in a different order than [`Self::reduce_add`]'s.
    pub fn reduce_add_each<'b>(&self, block: &'b Block<'c>, vectors: &[Value<'c, 'b>]) -> Vec<Value<'c, 'b>> {
        let ty = self.vector_type(16, "f32");
        // Lanes `lo` and `hi` of the 32 of (x, y), added.
        let fold = |x: Value<'c, 'b>, y: Value<'c, 'b>, lo: &[i32], hi: &[i32]| {
            let a = self.shuffle(block, x, y, lo, ty);
            let c = self.shuffle(block, x, y, hi, ty);
            self.dot_op(block, "arith.addf", a, c)
        };
        let runs = |len: i32, stride: i32| -> [Vec<i32>; 2] { [0, len].map(|first| (0..32).step_by(stride as usize).flat_map(|r| r + first..r + first + len).take(16).collect()) };
        let mut sums = Vec::with_capacity(vectors.len());
        for four in vectors.chunks(4) {
            if four.len() < 4 {
                sums.extend(four.iter().map(|&v| self.reduce_add(block, v)));
                continue;
            }
            // Lanes 0-7: x's halves added, 8-15: y's.
            let [lo, hi] = runs(8, 16);
            let s = fold(four[0], four[1], &lo, &hi);
            let t = fold(four[2], four[3], &lo, &hi);
            // Lanes 4j .. 4j + 4: vector j's partial sums.
            let [lo, hi] = runs(4, 8);
            let u = fold(s, t, &lo, &hi);
            // Lanes 2j, 2j + 1, then lane j (upper lanes repeat).
            let [lo, hi] = runs(2, 4);
            let v = fold(u, u, &lo[..8].repeat(2), &hi[..8].repeat(2));
            let [lo, hi] = runs(1, 2);
            let w = fold(v, v, &lo[..8].repeat(2), &hi[..8].repeat(2));
            sums.extend((0..4).map(|j| self.extract_lane(block, w, j)));
        }
        sums
    }

    /// Lane `lane` of `vector`.
    pub fn extract_lane<'b>(&self, block: &'b Block<'c>, vector: Value<'c, '_>, lane: usize) -> Value<'c, 'b> {
        let index = self.int(block, 32, lane as i64);
        let element = match vector.r#type() {
            t if t == self.vector_type(16, "f32") => self.f32_type(),
            t => panic!("extract_lane of {t}"),
        };
        push(
            block,
            OperationBuilder::new("llvm.extractelement", self.location)
                .add_operands(&[vector, index])
                .add_results(&[element])
                .build()
                .expect("valid llvm.extractelement"),
        )
    }

    /// The sum of a vector's f32 lanes in any order (`reassoc`).
    pub fn reduce_add<'b>(&self, block: &'b Block<'c>, vector: Value<'c, '_>) -> Value<'c, 'b> {
        let zero = self.f32(block, 0.0);
        push(
            block,
            OperationBuilder::new("llvm.intr.vector.reduce.fadd", self.location)
                .add_operands(&[zero, vector])
                .add_results(&[self.f32_type()])
                .add_attributes(&[(
                    melior::ir::Identifier::new(self.context, "fastmathFlags"),
                    melior::ir::Attribute::parse(self.context, "#llvm.fastmath<reassoc>").expect("valid fastmath"),
                )])
                .build()
                .expect("valid llvm.intr.vector.reduce.fadd"),
        )
    }

    /// Calls `each(block, run)` over the indices `lo .. hi`: runs of `size`
    /// consecutive indices (`run` holds them) while whole runs fit, then
    /// every index left over alone (`run` of one). Kernels use it to share
    /// work between rows or tokens (decoded weights, loaded activations).
    pub fn for_runs(&self, block: &Block<'c>, lo: Value<'c, '_>, hi: Value<'c, '_>, size: usize, each: impl Fn(&Block<'c>, &[Value<'c, '_>])) {
        let one = self.index(block, 1);
        let step = self.index(block, size as i64);
        let len = self.subi(block, hi, lo);
        let runs = self.divui(block, len, step);
        let span = self.muli(block, runs, step);
        let split = self.addi(block, lo, span);
        let whole = self.loop_body(&[]);
        {
            let first = arg(&whole, 0);
            let run: Vec<Value> = (0..size)
                .map(|i| {
                    let offset = self.index(&whole, i as i64);
                    self.addi(&whole, first, offset)
                })
                .collect();
            each(&whole, &run);
            self.yield_(&whole, &[]);
        }
        self.for_op(block, lo, split, step, &[], whole);
        if size > 1 {
            let rest = self.loop_body(&[]);
            {
                let i = arg(&rest, 0);
                each(&rest, &[i]);
                self.yield_(&rest, &[]);
            }
            self.for_op(block, split, hi, one, &[], rest);
        }
    }

    /// `e^x` for an f32 scalar `x` in plain arithmetic, for the CPU
    /// kernels: a libm call in an inner loop cannot vectorize and spills
    /// every vector register around it; this LLVM vectorizes. Cephes' `expf` (within
    /// 2 ulp of e^x): `n = round(x·log2 e)`, `r = x − n·ln 2` (ln 2 in two
    /// parts, the first exact in few bits, so `n·C1` is exact), `e^r` by
    /// its polynomial, times `2^n` built in the exponent bits as two factors
    /// (so that n = 128, just below the overflow cut, stays finite). Above
    /// ln(FLT_MAX) the result is +inf; below −87.34 (results under the
    /// smallest normal f32, 1.2e-38) it is 0; NaN stays NaN.
    pub fn exp_f32<'b>(&self, block: &'b Block<'c>, x: Value<'c, '_>) -> Value<'c, 'b> {
        let c = |v: f64| self.f32(block, v);
        let ci = |v: i64| self.int(block, 32, v);
        let (hi, lo) = (88.722_839_052_068_35, -87.336_544_750_553_1);
        let (hi_v, lo_v) = (c(hi), c(lo));
        // maximumf/minimumf propagate NaN.
        let xc = push(
            block,
            OperationBuilder::new("arith.maximumf", self.location)
                .add_operands(&[x, lo_v])
                .add_results(&[x.r#type()])
                .build()
                .expect("valid arith.maximumf"),
        );
        let xc = push(block, arith::minimumf(xc, hi_v, self.location));
        let scaled = self.mulf(block, xc, c(std::f64::consts::LOG2_E));
        let fx = self.math1(block, "roundeven", scaled);
        let r = self.subf(block, xc, self.mulf(block, fx, c(0.693_359_375)));
        let r = self.subf(block, r, self.mulf(block, fx, c(-2.121_944_400_546_905_8e-4)));
        let z = self.mulf(block, r, r);
        let mut y = c(1.987_569_150_0e-4);
        for coefficient in [1.398_199_950_7e-3, 8.333_451_907_3e-3, 4.166_579_589_4e-2, 1.666_666_545_9e-1, 5.000_000_120_1e-1] {
            y = self.mulf(block, y, r);
            y = self.addf(block, y, c(coefficient));
        }
        y = self.mulf(block, y, z);
        y = self.addf(block, y, r);
        y = self.addf(block, y, c(1.0));
        let n = self.fptosi_to(block, fx, self.int_type(32));
        let half = push(block, arith::shrsi(n, ci(1), self.location));
        let rest = self.subi(block, n, half);
        let float_type = x.r#type();
        let power = |e: Value<'c, 'b>| {
            let biased = self.addi(block, e, ci(127));
            let bits = self.shli(block, biased, ci(23));
            self.bitcast(block, bits, float_type)
        };
        let y = self.mulf(block, y, power(half));
        let y = self.mulf(block, y, power(rest));
        let above = push(block, arith::cmpf(self.context, arith::CmpfPredicate::Ogt, x, hi_v, self.location));
        let below = push(block, arith::cmpf(self.context, arith::CmpfPredicate::Olt, x, lo_v, self.location));
        let y = push(block, arith::select(above, c(f64::INFINITY), y, self.location));
        push(block, arith::select(below, c(0.0), y, self.location))
    }

    /// The arith binary op `name` with `#arith.fastmath<reassoc,contract>`,
    /// for the terms of dot products only: reassociation lets LLVM
    /// vectorize the reduction (the order of f32 additions then differs
    /// from the reference's, which the numerical tests bound);
    /// dequantization and everything else keep exact IEEE arithmetic.
    pub fn dot_op<'b>(&self, block: &'b Block<'c>, name: &str, x: Value<'c, '_>, y: Value<'c, '_>) -> Value<'c, 'b> {
        let flags = melior::ir::Attribute::parse(self.context, "#arith.fastmath<reassoc,contract>").expect("valid fastmath attribute");
        push(
            block,
            OperationBuilder::new(name, self.location)
                .add_operands(&[x, y])
                .add_results(&[x.r#type()])
                .add_attributes(&[(melior::ir::Identifier::new(self.context, "fastmath"), flags)])
                .build()
                .expect("valid arith op"),
        )
    }

    /// `llvm.intr.vector.reduce.<kind>` of `vector` to a `result` scalar
    /// (`fmax`: maxnum semantics; `add`: integer sum).
    pub fn reduce<'b>(&self, block: &'b Block<'c>, kind: &str, vector: Value<'c, '_>, result: Type<'c>) -> Value<'c, 'b> {
        push(
            block,
            OperationBuilder::new(&format!("llvm.intr.vector.reduce.{kind}"), self.location)
                .add_operands(&[vector])
                .add_results(&[result])
                .build()
                .expect("valid llvm.intr.vector.reduce"),
        )
    }

    /// `arith.fptosi` (round toward zero) to the integer (vector) type `to`.
    pub fn fptosi_to<'b>(&self, block: &'b Block<'c>, a: Value<'c, '_>, to: Type<'c>) -> Value<'c, 'b> {
        push(block, arith::fptosi(a, to, self.location))
    }

    /// `arith.trunci` to the integer (vector) type `to`.
    pub fn trunci_to<'b>(&self, block: &'b Block<'c>, a: Value<'c, '_>, to: Type<'c>) -> Value<'c, 'b> {
        push(block, arith::trunci(a, to, self.location))
    }

    /// `memref.alloca() {alignment}` : memref<len x f32>, stack scratch.
    pub fn alloca_f32_aligned<'b>(&self, block: &'b Block<'c>, len: usize, align: usize) -> Value<'c, 'b> {
        push(
            block,
            OperationBuilder::new("memref.alloca", self.location)
                .add_results(&[self.memref_type(&format!("memref<{len}xf32>"))])
                .add_attributes(&[
                    (
                        melior::ir::Identifier::new(self.context, "operandSegmentSizes"),
                        melior::ir::attribute::DenseI32ArrayAttribute::new(self.context, &[0, 0]).into(),
                    ),
                    (
                        melior::ir::Identifier::new(self.context, "alignment"),
                        IntegerAttribute::new(self.int_type(64), align as i64).into(),
                    ),
                ])
                .build()
                .expect("valid memref.alloca"),
        )
    }
}
