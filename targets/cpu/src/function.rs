//! The kernel calling convention as a function: `name(wg, tokens, start,
//! buffers...)` on memrefs, with the C interface the runtime calls.

use melior::{
    dialect::func,
    ir::{
        attribute::{StringAttribute, TypeAttribute},
        block::BlockLike,
        r#type::FunctionType,
        Attribute, Block, Identifier, Region, RegionLike, Type,
    },
};
use q35_target::builder::Builder;

/// The kernel `name` with the C interface, whose body `block` (arguments
/// `arg_types`) is built up to its return.
pub fn kernel_function<'c>(b: &Builder<'c>, name: &str, arg_types: &[Type<'c>], block: Block<'c>) -> melior::ir::Operation<'c> {
    block.append_operation(func::r#return(&[], b.location));
    let region = Region::new();
    region.append_block(block);
    func::func(
        b.context,
        StringAttribute::new(b.context, name),
        TypeAttribute::new(FunctionType::new(b.context, arg_types, &[]).into()),
        region,
        &[(
            Identifier::new(b.context, "llvm.emit_c_interface"),
            Attribute::unit(b.context),
        )],
        b.location,
    )
}
