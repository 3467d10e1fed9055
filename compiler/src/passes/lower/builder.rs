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
        push(
            block,
            OperationBuilder::new("memref.alloca", self.location)
                .add_results(&[self.memref_type(&format!("memref<{len}xf32>"))])
                .add_attributes(&[(
                    melior::ir::Identifier::new(self.context, "operandSegmentSizes"),
                    melior::ir::attribute::DenseI32ArrayAttribute::new(self.context, &[0, 0]).into(),
                )])
                .build()
                .expect("valid memref.alloca"),
        )
    }
}
