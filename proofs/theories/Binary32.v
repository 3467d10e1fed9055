(** * Dequantization in IEEE 754 binary32.

    Every kernel and the reference dequantize with [w' = fl32(min + fl32(q * s))]
    (docs/format-spec-draft.md), i.e. in Rust [min + (q as f32) * s] with two
    separately rounded f32 operations (no fused multiply-add), round to nearest even.

    binary32 is modelled with Flocq: [fl32] is rounding to nearest even in the FLT
    format with precision 24 and minimal exponent -149 (subnormals included, no
    overflow); [dequant_b32] is the same computation with Flocq's IEEE 754
    [binary32] operations ([b32_mult], [b32_plus]), and [dequant_b32_correct]
    shows the two agree when nothing overflows. *)

From Coq Require Import ZArith Reals Lra Lia.
From Flocq Require Import Core Relative.
From Flocq Require Import IEEE754.Binary IEEE754.Bits.
From Q35 Require Import Format Quant.
Local Open Scope R_scope.

(** ** The binary32 model *)

Definition fexp32 : Z -> Z := FLT_exp (-149) 24.

(** Round to nearest, ties to even, in binary32 (without overflow). *)
Definition fl32 (x : R) : R := round radix2 fexp32 ZnearestE x.

(** [x] is a (finite) binary32 value. *)
Definition is_b32 (x : R) : Prop := generic_format radix2 fexp32 x.

(** Unit roundoff of binary32: [2^-24]. *)
Definition u32 : R := bpow radix2 (-24).

(** [q35_format::dequant(min, s, q) = fl32(min + fl32(q * s))]. *)
Definition dequant (min s : R) (q : Z) : R := fl32 (min + fl32 (IZR q * s)).

Lemma u32_val : u32 = / 16777216.
Proof. reflexivity. Qed.

Lemma u32_half_ulp : / 2 * bpow radix2 (- (24) + 1) = u32.
Proof.
  unfold u32. replace (- (24) + 1)%Z with (-23)%Z by reflexivity.
  replace (-24)%Z with (-1 + -23)%Z by reflexivity.
  rewrite bpow_plus. reflexivity.
Qed.

Lemma u32_pos : 0 < u32.
Proof. rewrite u32_val. lra. Qed.

(** ** Rounding error on the grid [2^-149 Z] *)

(** Every binary32 value is an integer multiple of [2^-149]. *)
Lemma b32_on_grid : forall x, is_b32 x -> exists m, x = F2R (Float radix2 m (-149)).
Proof.
  intros x Hx. apply generic_format_FIX_FLT in Hx.
  exists (Ztrunc (scaled_mantissa radix2 (FIX_exp (-149)) x)). exact Hx.
Qed.

(** On that grid, rounding has no underflow error: the error is at most [u32 * |x|]. *)
Lemma fl32_grid_error : forall m,
  let x := F2R (Float radix2 m (-149)) in
  Rabs (fl32 x - x) <= u32 * Rabs x.
Proof.
  intros m x.
  assert (H := relative_error_N_FLT_F2R_emin radix2 (-149) 24 eq_refl
                 (fun z => negb (Z.even z)) m).
  rewrite u32_half_ulp in H. exact H.
Qed.

Lemma grid_plus : forall a b,
  F2R (Float radix2 a (-149)) + F2R (Float radix2 b (-149)) = F2R (Float radix2 (a + b) (-149)).
Proof. intros. unfold F2R. simpl. rewrite plus_IZR. ring. Qed.

Lemma grid_mult_int : forall (q a : Z),
  IZR q * F2R (Float radix2 a (-149)) = F2R (Float radix2 (q * a) (-149)).
Proof. intros. unfold F2R. simpl. rewrite mult_IZR. ring. Qed.

Lemma fl32_b32 : forall x, is_b32 (fl32 x).
Proof.
  intros x. apply generic_format_round.
  - apply FLT_exp_valid. reflexivity.
  - apply valid_rnd_N.
Qed.

(** ** Error of the binary32 dequantization *)

(** [fl32(q*s)] and [fl32(min + fl32(q*s))] each have relative error [<= 2^-24] and no
    underflow term (both exact results lie on the [2^-149] grid). *)
Theorem dequant_error : forall min s q,
  is_b32 min -> is_b32 s ->
  Rabs (dequant min s q - dequant_real min s q)
    <= u32 * Rabs (IZR q * s) + u32 * Rabs (min + fl32 (IZR q * s)).
Proof.
  intros min s q Hmin Hs.
  destruct (b32_on_grid min Hmin) as [a Ha].
  destruct (b32_on_grid s Hs) as [b Hb].
  assert (E1 : Rabs (fl32 (IZR q * s) - IZR q * s) <= u32 * Rabs (IZR q * s)).
  { rewrite Hb, grid_mult_int. apply fl32_grid_error. }
  destruct (b32_on_grid _ (fl32_b32 (IZR q * s))) as [c Hc].
  assert (E2 : Rabs (fl32 (min + fl32 (IZR q * s)) - (min + fl32 (IZR q * s)))
               <= u32 * Rabs (min + fl32 (IZR q * s))).
  { rewrite Hc, Ha, grid_plus. apply fl32_grid_error. }
  unfold dequant, dequant_real.
  replace (fl32 (min + fl32 (IZR q * s)) - (min + IZR q * s))
    with ((fl32 (min + fl32 (IZR q * s)) - (min + fl32 (IZR q * s)))
          + (fl32 (IZR q * s) - IZR q * s)) by ring.
  eapply Rle_trans; [apply Rabs_triang|]. lra.
Qed.

(** The same bound in terms of exact quantities only:
    [delta = 2^-24 (1 + 2^-24) |q s| + 2^-24 |min + q s|]. *)
Theorem dequant_error_exact : forall min s q,
  is_b32 min -> is_b32 s ->
  Rabs (dequant min s q - dequant_real min s q)
    <= u32 * (1 + u32) * Rabs (IZR q * s) + u32 * Rabs (min + IZR q * s).
Proof.
  intros min s q Hmin Hs.
  assert (H := dequant_error min s q Hmin Hs).
  destruct (b32_on_grid s Hs) as [b Hb].
  assert (E1 : Rabs (fl32 (IZR q * s) - IZR q * s) <= u32 * Rabs (IZR q * s)).
  { rewrite Hb, grid_mult_int. apply fl32_grid_error. }
  assert (E3 : Rabs (min + fl32 (IZR q * s)) <= Rabs (min + IZR q * s) + u32 * Rabs (IZR q * s)).
  { replace (min + fl32 (IZR q * s)) with ((min + IZR q * s) + (fl32 (IZR q * s) - IZR q * s))
      by ring.
    eapply Rle_trans; [apply Rabs_triang|]. lra. }
  assert (Hu := u32_pos).
  apply Rmult_le_compat_l with (r := u32) in E3; [|lra].
  lra.
Qed.

(** The explicit error term used by the artifact checker:
    [delta32 L min s = 2^-24 * ((2 + 2^-24) * L * s + |min|)]. *)
Definition delta32 (L : Z) (min s : R) : R := u32 * ((2 + u32) * IZR L * s + Rabs min).

(** Quantize then dequantize in binary32 (wide form, see [quant_error_wide]). *)
Theorem dequant_quant_error_wide : forall L min s w,
  (1 <= L)%Z -> 0 < s -> is_b32 min -> is_b32 s ->
  min - s / 2 <= w <= min + (IZR L + /2) * s ->
  Rabs (dequant min s (quantize_code L min s w) - w) <= s / 2 + delta32 L min s.
Proof.
  intros L min s w HL Hs Hmin Hsb Hw.
  destruct (quant_error_wide L min s w HL Hs Hw) as [Hq Herr].
  set (q := quantize_code L min s w) in *.
  assert (Hd := dequant_error_exact min s q Hmin Hsb).
  assert (Hq0 : 0 <= IZR q) by (apply IZR_le; lia).
  assert (HqL : IZR q <= IZR L) by (apply IZR_le; lia).
  assert (Hqs : Rabs (IZR q * s) <= IZR L * s).
  { rewrite Rabs_pos_eq by nra. nra. }
  assert (Hmqs : Rabs (min + IZR q * s) <= Rabs min + IZR L * s).
  { eapply Rle_trans; [apply Rabs_triang|]. lra. }
  assert (Hu := u32_pos).
  assert (D : u32 * (1 + u32) * Rabs (IZR q * s) + u32 * Rabs (min + IZR q * s)
              <= delta32 L min s).
  { unfold delta32.
    apply Rle_trans with (u32 * (1 + u32) * (IZR L * s) + u32 * (Rabs min + IZR L * s)).
    - apply Rplus_le_compat.
      + apply Rmult_le_compat_l; [nra | exact Hqs].
      + apply Rmult_le_compat_l; [lra | exact Hmqs].
    - lra. }
  replace (dequant min s q - w) with ((dequant min s q - dequant_real min s q)
                                      + (dequant_real min s q - w)) by ring.
  eapply Rle_trans; [apply Rabs_triang|]. lra.
Qed.

(** Quantize then dequantize in binary32: for [w] in [[min, min + L*s]],
    [|fl32(min + fl32(q*s)) - w| <= s/2 + delta32 L min s]. *)
Theorem dequant_quant_error : forall L min s w,
  (1 <= L)%Z -> 0 < s -> is_b32 min -> is_b32 s ->
  min <= w <= min + IZR L * s ->
  Rabs (dequant min s (quantize_code L min s w) - w) <= s / 2 + delta32 L min s.
Proof.
  intros. apply dequant_quant_error_wide; try assumption. lra.
Qed.

Theorem dequant_quant_error_L4 : forall min s w,
  0 < s -> is_b32 min -> is_b32 s -> min <= w <= min + IZR L4 * s ->
  Rabs (dequant min s (quantize_code L4 min s w) - w) <= s / 2 + delta32 L4 min s.
Proof. intros. apply dequant_quant_error; unfold L4; try lia; assumption. Qed.

Theorem dequant_quant_error_L3 : forall min s w,
  0 < s -> is_b32 min -> is_b32 s -> min <= w <= min + IZR L3 * s ->
  Rabs (dequant min s (quantize_code L3 min s w) - w) <= s / 2 + delta32 L3 min s.
Proof. intros. apply dequant_quant_error; unfold L3; try lia; assumption. Qed.

(** Degenerate group ([s = 0]): the binary32 reconstruction is [min] exactly. *)
Theorem dequant_degenerate : forall min q,
  is_b32 min -> dequant min 0 q = min.
Proof.
  intros min q Hmin. unfold dequant, fl32.
  rewrite Rmult_0_r, round_0 by apply valid_rnd_N. rewrite Rplus_0_r.
  apply round_generic; [apply valid_rnd_N | exact Hmin].
Qed.

(** ** The step is computed in binary32: [s = fl32(range / L)] *)

(** Rounding [range / L] may make [L * s] slightly smaller than [range]; the top of the
    group still lies within [(L + 1/2) s] of [min], so the wide theorems apply.
    Needs [range / L] to be a normal binary32 number ([>= 2^-126]); in q35 [range] is
    0 (degenerate group) or at least the smallest f16 subnormal [2^-24]. *)
Theorem scale_f32_covers_range : forall L range,
  (1 <= L <= 2 ^ 22)%Z -> bpow radix2 (-126) * IZR L <= range ->
  0 < fl32 (range / IZR L) /\ range <= (IZR L + /2) * fl32 (range / IZR L).
Proof.
  intros L range HL Hr.
  assert (HL1 : 1 <= IZR L) by (apply IZR_le; lia).
  assert (HL2 : IZR L <= 4194304) by (apply IZR_le; lia).
  set (x := range / IZR L).
  assert (Hrx : range = IZR L * x) by (unfold x; field; lra).
  assert (Hx : bpow radix2 (-126) <= x).
  { unfold x. apply Rmult_le_reg_r with (IZR L); [lra|].
    unfold Rdiv. rewrite Rmult_assoc, Rinv_l by lra. lra. }
  assert (Hb : 0 < bpow radix2 (-126)) by apply bpow_gt_0.
  assert (E := relative_error_N_FLT radix2 (-149) 24 eq_refl (fun z => negb (Z.even z)) x).
  rewrite Rabs_pos_eq in E by lra. specialize (E Hx).
  change (round radix2 (FLT_exp (-149) 24) ZnearestE x) with (fl32 x) in E.
  rewrite u32_half_ulp in E.
  apply Rabs_le_inv in E. rewrite u32_val in E.
  split; [nra|]. rewrite Hrx. nra.
Qed.

(** End to end with the stored parameters: [min] is binary32 (an f16), [range] is the
    stored range (exact in binary32), [s = fl32(range / L)], and the group's weights
    lie in [[min, min + range]]. *)
Theorem dequant_quant_error_stored : forall L min range w,
  (1 <= L <= 2 ^ 22)%Z -> is_b32 min ->
  bpow radix2 (-126) * IZR L <= range ->
  min <= w <= min + range ->
  let s := fl32 (range / IZR L) in
  Rabs (dequant_real min s (quantize_code L min s w) - w) <= s / 2 /\
  Rabs (dequant min s (quantize_code L min s w) - w) <= s / 2 + delta32 L min s.
Proof.
  intros L min range w HL Hmin Hr Hw s.
  destruct (scale_f32_covers_range L range HL Hr) as [Hs Hcov]. fold s in Hs, Hcov.
  assert (Hw' : min - s / 2 <= w <= min + (IZR L + /2) * s) by lra.
  split.
  - apply quant_error_wide; [lia | exact Hs | exact Hw'].
  - apply dequant_quant_error_wide; [lia | exact Hs | exact Hmin | apply fl32_b32 | exact Hw'].
Qed.

(** ** IEEE 754 binary32 operations *)

(** [q as f32] for a code [q]. *)
Definition b32_of_code (q : Z) : binary32 :=
  binary_normalize 24 128 eq_refl eq_refl BinarySingleNaN.mode_NE q 0 false.

(** [min + (q as f32) * s] with IEEE binary32 operations (Flocq's [Bmult] and [Bplus]
    at precision 24, [emax] 128, i.e. [b32_mult] and [b32_plus] of [Flocq.IEEE754.Bits]). *)
Definition dequant_b32 (min s : binary32) (q : Z) : binary32 :=
  Bplus 24 128 eq_refl eq_refl binop_nan_pl32 BinarySingleNaN.mode_NE min
    (Bmult 24 128 eq_refl eq_refl binop_nan_pl32 BinarySingleNaN.mode_NE (b32_of_code q) s).

Lemma b32_round_NE : forall x,
  round radix2 (SpecFloat.fexp 24 128) (BinarySingleNaN.round_mode BinarySingleNaN.mode_NE) x = fl32 x.
Proof. reflexivity. Qed.

Lemma bpow_b32 : forall e, (-149 <= e)%Z -> is_b32 (bpow radix2 e).
Proof. intros. apply generic_format_FLT_bpow; [reflexivity | assumption]. Qed.

Lemma fl32_abs_le_bpow : forall x e, (-149 <= e)%Z ->
  Rabs x <= bpow radix2 e -> Rabs (fl32 x) <= bpow radix2 e.
Proof.
  intros x e He Hx. apply abs_round_le_generic.
  - apply FLT_exp_valid. reflexivity.
  - apply valid_rnd_N.
  - apply bpow_b32. exact He.
  - exact Hx.
Qed.

(** Codes (and [L]) convert to binary32 exactly. *)
Lemma b32_of_code_correct : forall q, (0 <= q < 2 ^ 24)%Z ->
  B2R 24 128 (b32_of_code q) = IZR q /\ is_finite 24 128 (b32_of_code q) = true.
Proof.
  intros q Hq.
  assert (Hfmt : is_b32 (IZR q)).
  { apply generic_format_FLT. exists (Float radix2 q 0).
    - unfold F2R. simpl. ring.
    - simpl. rewrite Z.abs_eq by lia. lia.
    - simpl. lia. }
  assert (H := binary_normalize_correct 24 128 eq_refl eq_refl BinarySingleNaN.mode_NE q 0 false).
  rewrite b32_round_NE in H.
  replace (F2R (Float radix2 q 0)) with (IZR q) in H by (unfold F2R; simpl; ring).
  unfold fl32 in H. rewrite round_generic in H; [| apply valid_rnd_N | exact Hfmt].
  rewrite Rlt_bool_true in H.
  - destruct H as [H1 [H2 _]]. split; assumption.
  - apply Rle_lt_trans with (bpow radix2 24); [|apply bpow_lt; lia].
    rewrite Rabs_pos_eq by (apply IZR_le; lia).
    apply Rlt_le. rewrite <- IZR_Zpower by lia. apply IZR_lt. exact (proj2 Hq).
Qed.

(** [range / (L as f32)] with IEEE binary32 division. *)
Definition scale_b32 (range : binary32) (L : Z) : binary32 :=
  Bdiv 24 128 eq_refl eq_refl binop_nan_pl32 BinarySingleNaN.mode_NE range (b32_of_code L).

(** The step computed in binary32 is [fl32(range / L)], as used in
    [dequant_quant_error_stored]. *)
Theorem scale_b32_correct : forall (range : binary32) (L : Z),
  is_finite 24 128 range = true -> (1 <= L < 2 ^ 24)%Z ->
  Rabs (B2R 24 128 range) <= bpow radix2 126 ->
  is_finite 24 128 (scale_b32 range L) = true /\
  B2R 24 128 (scale_b32 range L) = fl32 (B2R 24 128 range / IZR L).
Proof.
  intros range L Fr HL Hr.
  destruct (b32_of_code_correct L ltac:(lia)) as [RL FL].
  assert (HL1 : 1 <= IZR L) by (apply IZR_le; lia).
  assert (Hd := Bdiv_correct 24 128 eq_refl eq_refl binop_nan_pl32 BinarySingleNaN.mode_NE
                  range (b32_of_code L) ltac:(rewrite RL; lra)).
  rewrite b32_round_NE, RL in Hd.
  assert (Hq : Rabs (B2R 24 128 range / IZR L) <= bpow radix2 126).
  { unfold Rdiv. rewrite Rabs_mult, (Rabs_pos_eq (/ IZR L)) by (left; apply Rinv_0_lt_compat; lra).
    apply Rle_trans with (Rabs (B2R 24 128 range) * 1); [|lra].
    apply Rmult_le_compat_l; [apply Rabs_pos|].
    rewrite <- Rinv_1. apply Rinv_le_contravar; lra. }
  rewrite Rlt_bool_true in Hd.
  - destruct Hd as [R1 [F1 _]]. unfold scale_b32. split; [rewrite F1; exact Fr | exact R1].
  - apply Rle_lt_trans with (bpow radix2 126).
    + apply fl32_abs_le_bpow; [lia | exact Hq].
    + apply bpow_lt; lia.
Qed.

(** The IEEE computation is finite and equals [dequant] when
    [|min| + |q * s| <= 2^126] (always true in q35: [min] and [s] come from f16 values). *)
Theorem dequant_b32_correct : forall (min s : binary32) (q : Z),
  is_finite 24 128 min = true -> is_finite 24 128 s = true ->
  (0 <= q < 2 ^ 24)%Z ->
  Rabs (B2R 24 128 min) + Rabs (IZR q * B2R 24 128 s) <= bpow radix2 126 ->
  is_finite 24 128 (dequant_b32 min s q) = true /\
  B2R 24 128 (dequant_b32 min s q) = dequant (B2R 24 128 min) (B2R 24 128 s) q.
Proof.
  intros min s q Fmin Fs Hq Hsmall.
  assert (Hlt : bpow radix2 126 < bpow radix2 128) by (apply bpow_lt; lia).
  assert (Hlt' : bpow radix2 127 < bpow radix2 128) by (apply bpow_lt; lia).
  destruct (b32_of_code_correct q Hq) as [Rq Fq].
  (* the product *)
  assert (Hprod : Rabs (IZR q * B2R 24 128 s) <= bpow radix2 126)
    by (assert (0 <= Rabs (B2R 24 128 min)) by apply Rabs_pos; lra).
  assert (Hm := Bmult_correct 24 128 eq_refl eq_refl binop_nan_pl32 BinarySingleNaN.mode_NE (b32_of_code q) s).
  rewrite b32_round_NE, Rq in Hm.
  rewrite Rlt_bool_true in Hm
    by (apply Rle_lt_trans with (bpow radix2 126); [apply fl32_abs_le_bpow; [lia | exact Hprod] | exact Hlt]).
  destruct Hm as [Rm [Fm _]]. rewrite Fq, Fs in Fm. simpl in Fm.
  (* the sum *)
  assert (Hp := fl32_abs_le_bpow _ 126 ltac:(lia) Hprod).
  assert (Hsum : Rabs (B2R 24 128 min + fl32 (IZR q * B2R 24 128 s)) <= bpow radix2 127).
  { eapply Rle_trans; [apply Rabs_triang|].
    assert (Hmin : Rabs (B2R 24 128 min) <= bpow radix2 126)
      by (assert (0 <= Rabs (IZR q * B2R 24 128 s)) by apply Rabs_pos; lra).
    replace (bpow radix2 127) with (bpow radix2 126 + bpow radix2 126)
      by (change 127%Z with (1 + 126)%Z; rewrite bpow_plus; simpl; lra).
    lra. }
  assert (Ha := Bplus_correct 24 128 eq_refl eq_refl binop_nan_pl32 BinarySingleNaN.mode_NE min
                  (Bmult 24 128 eq_refl eq_refl binop_nan_pl32 BinarySingleNaN.mode_NE
                     (b32_of_code q) s) Fmin Fm).
  rewrite b32_round_NE, Rm in Ha.
  rewrite Rlt_bool_true in Ha
    by (apply Rle_lt_trans with (bpow radix2 127); [apply fl32_abs_le_bpow; [lia | exact Hsum] | exact Hlt']).
  destruct Ha as [Ra [Fa _]].
  unfold dequant_b32. split.
  - exact Fa.
  - rewrite Ra. reflexivity.
Qed.
