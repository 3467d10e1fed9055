(** * Audit: the assumptions of every main theorem.

    Compiled by [proofs/check.sh] (not part of [make]); its output is checked there:
    each [Theorem] of [theories/] must appear below, and the only axioms allowed are
    those of Coq's real numbers (and the classical logic Flocq uses).
    After adding a [Theorem], add its two lines here (check.sh fails until then). *)

From Q35 Require Import Format Quant Binary32 Tiling Accum.

(** ** Format.v *)
Goal True. idtac "== Q35.Format.pack_group_length". Abort.
Print Assumptions Q35.Format.pack_group_length.
Goal True. idtac "== Q35.Format.block_bytes_128". Abort.
Print Assumptions Q35.Format.block_bytes_128.
Goal True. idtac "== Q35.Format.block_bytes_mul16". Abort.
Print Assumptions Q35.Format.block_bytes_mul16.
Goal True. idtac "== Q35.Format.pack_group_bytes". Abort.
Print Assumptions Q35.Format.pack_group_bytes.
Goal True. idtac "== Q35.Format.unpack_pack_group". Abort.
Print Assumptions Q35.Format.unpack_pack_group.
Goal True. idtac "== Q35.Format.pack_group_padding_zero". Abort.
Print Assumptions Q35.Format.pack_group_padding_zero.
Goal True. idtac "== Q35.Format.pack_group_writes_in_block". Abort.
Print Assumptions Q35.Format.pack_group_writes_in_block.

(** ** Quant.v *)
Goal True. idtac "== Q35.Quant.rust_round_tie". Abort.
Print Assumptions Q35.Quant.rust_round_tie.
Goal True. idtac "== Q35.Quant.dequant_real_error". Abort.
Print Assumptions Q35.Quant.dequant_real_error.
Goal True. idtac "== Q35.Quant.quant_error_wide". Abort.
Print Assumptions Q35.Quant.quant_error_wide.
Goal True. idtac "== Q35.Quant.quant_error". Abort.
Print Assumptions Q35.Quant.quant_error.
Goal True. idtac "== Q35.Quant.quant_error_L4". Abort.
Print Assumptions Q35.Quant.quant_error_L4.
Goal True. idtac "== Q35.Quant.quant_error_L3". Abort.
Print Assumptions Q35.Quant.quant_error_L3.
Goal True. idtac "== Q35.Quant.quant_degenerate". Abort.
Print Assumptions Q35.Quant.quant_degenerate.

(** ** Binary32.v *)
Goal True. idtac "== Q35.Binary32.dequant_error". Abort.
Print Assumptions Q35.Binary32.dequant_error.
Goal True. idtac "== Q35.Binary32.dequant_error_exact". Abort.
Print Assumptions Q35.Binary32.dequant_error_exact.
Goal True. idtac "== Q35.Binary32.dequant_quant_error_wide". Abort.
Print Assumptions Q35.Binary32.dequant_quant_error_wide.
Goal True. idtac "== Q35.Binary32.dequant_quant_error". Abort.
Print Assumptions Q35.Binary32.dequant_quant_error.
Goal True. idtac "== Q35.Binary32.dequant_quant_error_L4". Abort.
Print Assumptions Q35.Binary32.dequant_quant_error_L4.
Goal True. idtac "== Q35.Binary32.dequant_quant_error_L3". Abort.
Print Assumptions Q35.Binary32.dequant_quant_error_L3.
Goal True. idtac "== Q35.Binary32.dequant_degenerate". Abort.
Print Assumptions Q35.Binary32.dequant_degenerate.
Goal True. idtac "== Q35.Binary32.scale_f32_covers_range". Abort.
Print Assumptions Q35.Binary32.scale_f32_covers_range.
Goal True. idtac "== Q35.Binary32.dequant_quant_error_stored". Abort.
Print Assumptions Q35.Binary32.dequant_quant_error_stored.
Goal True. idtac "== Q35.Binary32.scale_b32_correct". Abort.
Print Assumptions Q35.Binary32.scale_b32_correct.
Goal True. idtac "== Q35.Binary32.dequant_b32_correct". Abort.
Print Assumptions Q35.Binary32.dequant_b32_correct.

(** ** Tiling.v *)
Goal True. idtac "== Q35.Tiling.tiled_sum_eq". Abort.
Print Assumptions Q35.Tiling.tiled_sum_eq.
Goal True. idtac "== Q35.Tiling.tiled_sumZ_eq". Abort.
Print Assumptions Q35.Tiling.tiled_sumZ_eq.
Goal True. idtac "== Q35.Tiling.tiled_sumR_eq". Abort.
Print Assumptions Q35.Tiling.tiled_sumR_eq.
Goal True. idtac "== Q35.Tiling.tiles_cover". Abort.
Print Assumptions Q35.Tiling.tiles_cover.
Goal True. idtac "== Q35.Tiling.tiled_prefix". Abort.
Print Assumptions Q35.Tiling.tiled_prefix.
Goal True. idtac "== Q35.Tiling.tiled_dequant_matvec_eq". Abort.
Print Assumptions Q35.Tiling.tiled_dequant_matvec_eq.

(** ** Accum.v *)
Goal True. idtac "== Q35.Accum.code_minus_zero_bound". Abort.
Print Assumptions Q35.Accum.code_minus_zero_bound.
Goal True. idtac "== Q35.Accum.q35_code_bound". Abort.
Print Assumptions Q35.Accum.q35_code_bound.
Goal True. idtac "== Q35.Accum.accum_bound". Abort.
Print Assumptions Q35.Accum.accum_bound.
Goal True. idtac "== Q35.Accum.accum_bound_C15". Abort.
Print Assumptions Q35.Accum.accum_bound_C15.
Goal True. idtac "== Q35.Accum.accum_no_overflow". Abort.
Print Assumptions Q35.Accum.accum_no_overflow.
Goal True. idtac "== Q35.Accum.K_max_tight". Abort.
Print Assumptions Q35.Accum.K_max_tight.
Goal True. idtac "== Q35.Accum.K_max_15". Abort.
Print Assumptions Q35.Accum.K_max_15.
Goal True. idtac "== Q35.Accum.K_max_7". Abort.
Print Assumptions Q35.Accum.K_max_7.
Goal True. idtac "== Q35.Accum.K_max_105". Abort.
Print Assumptions Q35.Accum.K_max_105.
Goal True. idtac "== Q35.Accum.K_max_15_tight". Abort.
Print Assumptions Q35.Accum.K_max_15_tight.
Goal True. idtac "== Q35.Accum.accum_no_overflow_C15". Abort.
Print Assumptions Q35.Accum.accum_no_overflow_C15.
Goal True. idtac "== Q35.Accum.accum_no_overflow_C7". Abort.
Print Assumptions Q35.Accum.accum_no_overflow_C7.
Goal True. idtac "== Q35.Accum.accum_no_overflow_C105". Abort.
Print Assumptions Q35.Accum.accum_no_overflow_C105.
Goal True. idtac "== Q35.Accum.acc_i32_exact". Abort.
Print Assumptions Q35.Accum.acc_i32_exact.
Goal True. idtac "== Q35.Accum.tiled_dot_int_eq". Abort.
Print Assumptions Q35.Accum.tiled_dot_int_eq.
Goal True. idtac "== Q35.Accum.tiled_no_overflow". Abort.
Print Assumptions Q35.Accum.tiled_no_overflow.
