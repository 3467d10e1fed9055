(** * Quantization error over the reals.

    [q = clamp(round((w - min) / s), 0, L)] and [w' = min + q * s]
    (docs/format-spec-draft.md; [q35_format::quantize_code]).
    [round] is Rust's [f32::round]: nearest integer, ties away from zero, which is
    Flocq's [ZnearestA = Znearest (Zle_bool 0)]. *)

From Coq Require Import ZArith Reals Lra Lia.
From Flocq Require Import Core.
From Q35 Require Import Format.
Local Open Scope R_scope.

(** Rust's [f32::round]. *)
Definition rust_round (x : R) : Z := ZnearestA x.

(** [v.clamp(lo, hi)]. *)
Definition clamp (lo hi v : Z) : Z := Z.max lo (Z.min hi v).

(** [q35_format::quantize_code]: code of weight [w] in a group with minimum [min]
    and step [s]; a zero step (all weights equal) gives code 0. *)
Definition quantize_code (L : Z) (min s w : R) : Z :=
  if Rlt_bool 0 s then clamp 0 L (rust_round ((w - min) / s)) else 0%Z.

(** Exact dequantization [min + q * s] (the binary32 version is in [Binary32.v]). *)
Definition dequant_real (min s : R) (q : Z) : R := min + IZR q * s.

(** Ties go away from zero, as in Rust. *)
Theorem rust_round_tie : forall n : Z,
  rust_round (IZR n + /2) = (if Z.leb 0 n then n + 1 else n)%Z.
Proof.
  intros n. unfold rust_round, Znearest.
  assert (Hf : Zfloor (IZR n + /2) = n).
  { apply Zfloor_imp. rewrite plus_IZR. lra. }
  rewrite Hf. replace (IZR n + /2 - IZR n) with (/2) by ring.
  rewrite Rcompare_Eq by reflexivity.
  assert (Hc : Zceil (IZR n + /2) = (n + 1)%Z).
  { apply Zceil_imp. rewrite minus_IZR, plus_IZR. simpl. lra. }
  rewrite Hc. unfold Zle_bool. destruct n; reflexivity.
Qed.

Lemma rust_round_half : forall x, Rabs (IZR (rust_round x) - x) <= /2.
Proof.
  intros x. rewrite Rabs_minus_sym. apply Znearest_half.
Qed.

Lemma quantize_code_range : forall L min s w, (0 <= L)%Z ->
  (0 <= quantize_code L min s w <= L)%Z.
Proof.
  intros. unfold quantize_code, clamp. destruct Rlt_bool; lia.
Qed.

(** The code's value is within half a step of [(w - min)/s] whenever [w] is at most
    half a step outside [[min, min + L*s]]. *)
Lemma quantize_code_half : forall L min s w,
  (1 <= L)%Z -> 0 < s ->
  min - s / 2 <= w <= min + (IZR L + /2) * s ->
  Rabs (IZR (quantize_code L min s w) - (w - min) / s) <= /2.
Proof.
  intros L min s w HL Hs Hw.
  set (x := (w - min) / s).
  assert (Hx : -/2 <= x <= IZR L + /2).
  { unfold x. split.
    - apply Rmult_le_reg_r with s; [exact Hs|].
      unfold Rdiv. rewrite Rmult_assoc, Rinv_l by lra. lra.
    - apply Rmult_le_reg_r with s; [exact Hs|].
      unfold Rdiv. rewrite Rmult_assoc, Rinv_l by lra. lra. }
  unfold quantize_code. rewrite Rlt_bool_true by exact Hs. fold x.
  assert (Hr := rust_round_half x).
  set (r := rust_round x) in *.
  apply Rabs_le_inv in Hr.
  unfold clamp.
  destruct (Z_lt_le_dec r 0) as [Hneg | Hnn].
  - rewrite Z.min_r by lia. rewrite Z.max_l by lia.
    assert (IZR r <= -1) by (apply IZR_le; lia).
    apply Rabs_le. simpl. lra.
  - destruct (Z_lt_le_dec L r) as [Hbig | Hle].
    + rewrite Z.min_l by lia. rewrite Z.max_r by lia.
      assert (IZR L + 1 <= IZR r) by (rewrite <- plus_IZR; apply IZR_le; lia).
      apply Rabs_le. lra.
    + rewrite Z.min_r by lia. rewrite Z.max_r by lia.
      apply Rabs_le. lra.
Qed.

(** For any integer code (however it was computed, e.g. with rounding errors in
    f32), the reconstruction error is [s] times the code's distance to [(w - min)/s]. *)
Theorem dequant_real_error : forall min s w q,
  0 < s -> Rabs (dequant_real min s q - w) = s * Rabs (IZR q - (w - min) / s).
Proof.
  intros min s w q Hs. unfold dequant_real.
  replace (min + IZR q * s - w) with (s * (IZR q - (w - min) / s)) by (field; lra).
  rewrite Rabs_mult, Rabs_pos_eq by lra. reflexivity.
Qed.

(** Main quantization theorem, in its wide form: for any [L >= 1], step [s > 0] and
    weight [w] in [[min - s/2, min + (L + 1/2) s]], the code lies in [[0, L]] and
    [|min + q*s - w| <= s/2]. *)
Theorem quant_error_wide : forall L min s w,
  (1 <= L)%Z -> 0 < s ->
  min - s / 2 <= w <= min + (IZR L + /2) * s ->
  (0 <= quantize_code L min s w <= L)%Z /\
  Rabs (dequant_real min s (quantize_code L min s w) - w) <= s / 2.
Proof.
  intros L min s w HL Hs Hw. split.
  - apply quantize_code_range. lia.
  - assert (H := quantize_code_half L min s w HL Hs Hw).
    set (q := IZR (quantize_code L min s w)) in *.
    unfold dequant_real. fold q.
    replace (min + q * s - w) with (s * (q - (w - min) / s))
      by (field; lra).
    rewrite Rabs_mult, Rabs_pos_eq by lra.
    apply Rle_trans with (s * /2); [apply Rmult_le_compat_l; lra | lra].
Qed.

(** Main quantization theorem as in DESIGN.md: [w] in [[min, min + L*s]]. *)
Theorem quant_error : forall L min s w,
  (1 <= L)%Z -> 0 < s ->
  min <= w <= min + IZR L * s ->
  (0 <= quantize_code L min s w <= L)%Z /\
  Rabs (dequant_real min s (quantize_code L min s w) - w) <= s / 2.
Proof.
  intros L min s w HL Hs Hw. apply quant_error_wide; try assumption. lra.
Qed.

Theorem quant_error_L4 : forall min s w,
  0 < s -> min <= w <= min + IZR L4 * s ->
  (0 <= quantize_code L4 min s w <= L4)%Z /\
  Rabs (dequant_real min s (quantize_code L4 min s w) - w) <= s / 2.
Proof. intros. apply quant_error; unfold L4; try lia; assumption. Qed.

Theorem quant_error_L3 : forall min s w,
  0 < s -> min <= w <= min + IZR L3 * s ->
  (0 <= quantize_code L3 min s w <= L3)%Z /\
  Rabs (dequant_real min s (quantize_code L3 min s w) - w) <= s / 2.
Proof. intros. apply quant_error; unfold L3; try lia; assumption. Qed.

(** Degenerate group ([max = min], so [range = 0] and [s = 0]): code 0, exact. *)
Theorem quant_degenerate : forall L min w,
  w = min ->
  quantize_code L min 0 w = 0%Z /\ dequant_real min 0 (quantize_code L min 0 w) = w.
Proof.
  intros L min w ->. unfold quantize_code.
  rewrite Rlt_bool_false by lra. split; [reflexivity|].
  unfold dequant_real. simpl. ring.
Qed.
