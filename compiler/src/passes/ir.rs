//! Small builders for the upstream ops the q35 passes emit (melior has no
//! typed builder for these, or none with the operands we need, such as
//! `scf.for` with loop-carried values).

use melior::{
    dialect::{arith, scf},
    ir::{
        attribute::{DenseI64ArrayAttribute, FloatAttribute, IntegerAttribute},
        block::BlockLike,
        operation::OperationBuilder,
        Attribute, Block, Identifier, Location, Operation, Region, RegionLike, Type, Value, ValueLike,
    },
    Context,
};

/// MLIR's marker for a dynamic size or offset in static_* attributes.
pub const DYNAMIC: i64 = i64::MIN;

fn build(op: OperationBuilder) -> Result<Operation, String> {
    op.build().map_err(|e| e.to_string())
}

pub fn index_constant<'c>(context: &'c Context, value: i64, location: Location<'c>) -> Operation<'c> {
    arith::constant(
        context,
        IntegerAttribute::new(Type::index(context), value).into(),
        location,
    )
}

pub fn f32_constant<'c>(context: &'c Context, value: f64, location: Location<'c>) -> Operation<'c> {
    arith::constant(
        context,
        FloatAttribute::new(context, Type::float32(context), value).into(),
        location,
    )
}

/// `tensor.dim %tensor, %index`.
pub fn tensor_dim<'c>(
    context: &'c Context,
    tensor: Value<'c, '_>,
    index: Value<'c, '_>,
    location: Location<'c>,
) -> Result<Operation<'c>, String> {
    build(
        OperationBuilder::new("tensor.dim", location)
            .add_operands(&[tensor, index])
            .add_results(&[Type::index(context)]),
    )
}

/// `tensor.splat %value[%dynamic_sizes...] : result`.
pub fn tensor_splat<'c>(
    value: Value<'c, '_>,
    dynamic_sizes: &[Value<'c, '_>],
    result: Type<'c>,
    location: Location<'c>,
) -> Result<Operation<'c>, String> {
    let mut operands = vec![value];
    operands.extend_from_slice(dynamic_sizes);
    build(
        OperationBuilder::new("tensor.splat", location)
            .add_operands(&operands)
            .add_results(&[result]),
    )
}

/// Offsets, sizes and strides of a slice: each static value, or
/// [`DYNAMIC`] with the value among the operands.
pub struct SliceSpec<'c, 'a> {
    pub offsets: Vec<(i64, Option<Value<'c, 'a>>)>,
    pub sizes: Vec<(i64, Option<Value<'c, 'a>>)>,
}

fn dense<'c>(context: &'c Context, values: &[i64]) -> Attribute<'c> {
    DenseI64ArrayAttribute::new(context, values).into()
}

/// `tensor.insert_slice %source into %dest[offsets][sizes][1, ...]`.
pub fn insert_slice<'c, 'a>(
    context: &'c Context,
    source: Value<'c, 'a>,
    dest: Value<'c, 'a>,
    spec: &SliceSpec<'c, 'a>,
    location: Location<'c>,
) -> Result<Operation<'c>, String> {
    fn static_of(parts: &[(i64, Option<Value>)]) -> Vec<i64> {
        parts.iter().map(|(v, d)| if d.is_some() { DYNAMIC } else { *v }).collect()
    }
    fn dynamic_of<'c, 'a>(parts: &[(i64, Option<Value<'c, 'a>>)]) -> Vec<Value<'c, 'a>> {
        parts.iter().filter_map(|(_, d)| *d).collect()
    }
    let offsets = dynamic_of(&spec.offsets);
    let sizes = dynamic_of(&spec.sizes);
    let mut operands = vec![source, dest];
    operands.extend(offsets.iter().copied());
    operands.extend(sizes.iter().copied());
    let segments = [1, 1, offsets.len() as i32, sizes.len() as i32, 0];
    let rank = spec.sizes.len();
    build(
        OperationBuilder::new("tensor.insert_slice", location)
            .add_operands(&operands)
            .add_results(&[dest.r#type()])
            .add_attributes(&[
                (
                    Identifier::new(context, "operandSegmentSizes"),
                    melior::ir::attribute::DenseI32ArrayAttribute::new(context, &segments).into(),
                ),
                (Identifier::new(context, "static_offsets"), dense(context, &static_of(&spec.offsets))),
                (Identifier::new(context, "static_sizes"), dense(context, &static_of(&spec.sizes))),
                (Identifier::new(context, "static_strides"), dense(context, &vec![1; rank])),
            ]),
    )
}

/// The body block of an `scf.for` with one loop-carried value: arguments
/// are the induction variable and the carried value. Fill it, end it with
/// [`scf_yield`], and pass it to [`for_loop`].
pub fn loop_body<'c>(context: &'c Context, carried: Type<'c>, location: Location<'c>) -> Block<'c> {
    Block::new(&[(Type::index(context), location), (carried, location)])
}

pub fn scf_yield<'c>(block: &Block<'c>, value: Value<'c, '_>, location: Location<'c>) {
    block.append_operation(scf::r#yield(&[value], location));
}

/// `scf.for %iv = %lower to %upper step %step iter_args(%acc = %init)`
/// with one loop-carried value and the body built by [`loop_body`].
pub fn for_loop<'c>(
    lower: Value<'c, '_>,
    upper: Value<'c, '_>,
    step: Value<'c, '_>,
    init: Value<'c, '_>,
    body: Block<'c>,
    location: Location<'c>,
) -> Result<Operation<'c>, String> {
    let region = Region::new();
    region.append_block(body);
    build(
        OperationBuilder::new("scf.for", location)
            .add_operands(&[lower, upper, step, init])
            .add_results(&[init.r#type()])
            .add_regions([region]),
    )
}
