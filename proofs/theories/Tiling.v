(** * Tiling the reduction dimension K (and the rows N).

    A loop over [0..K) split into tiles of size [T > 0]: [tile_count K T = ceil(K/T)]
    tiles, tile [t] covering [[t*T, min((t+1)*T, K))], the last one possibly a
    remainder tile. The tiled sum adds the tiles' partial sums in order. *)

From Coq Require Import ZArith Reals Lia List.
Import ListNotations.
From Q35 Require Import Format Sums.

Definition tile_count (K T : nat) : nat := ceil_div K T.
Definition tile_len (K T t : nat) : nat := Nat.min T (K - t * T).

(** [acc = zero; for t in 0..tile_count { part = zero; for i in 0..tile_len(t) { part += f(t*T+i) }; acc += part }] *)
Definition tiled_sum {A : Type} (add : A -> A -> A) (zero : A) (f : nat -> A) (K T : nat) : A :=
  sum add zero (fun t => sum add zero (fun i => f (t * T + i)%nat) (tile_len K T t))
      (tile_count K T).

Definition tiled_sumZ : (nat -> Z) -> nat -> nat -> Z := tiled_sum Z.add 0%Z.
Definition tiled_sumR : (nat -> R) -> nat -> nat -> R := tiled_sum Rplus 0%R.

Lemma full_tiles : forall {A} (add : A -> A -> A) zero f T m,
  (forall x y z, add x (add y z) = add (add x y) z) ->
  (forall x, add x zero = x) ->
  sum add zero (fun t => sum add zero (fun i => f (t * T + i)%nat) T) m
  = sum add zero f (m * T).
Proof.
  intros A add zero f T m Hassoc Hzero. induction m as [|m IH].
  - reflexivity.
  - replace (S m * T)%nat with (m * T + T)%nat by lia.
    rewrite sum_split by assumption. simpl. rewrite IH. reflexivity.
Qed.

(** Every tile starts inside [0..K). *)
Lemma tile_start_lt : forall K T t,
  (0 < T)%nat -> (t < tile_count K T)%nat -> (t * T < K)%nat.
Proof.
  intros K T t HT Ht. unfold tile_count, ceil_div in Ht.
  destruct (Nat.lt_ge_cases (t * T) K) as [H | H]; [exact H|]. exfalso.
  assert (Hle : ((K + (T - 1)) / T <= (t * T + (T - 1)) / T)%nat)
    by (apply Nat.div_le_mono; lia).
  rewrite (Nat.add_comm (t * T)), Nat.div_add in Hle by lia.
  rewrite (Nat.div_small (T - 1)) in Hle by lia. lia.
Qed.

(** Tiling does not change a sum, for any associative addition with a right identity. *)
Theorem tiled_sum_eq : forall {A} (add : A -> A -> A) zero f K T,
  (forall x y z, add x (add y z) = add (add x y) z) ->
  (forall x, add x zero = x) ->
  (0 < T)%nat ->
  tiled_sum add zero f K T = sum add zero f K.
Proof.
  intros A add zero f K T Hassoc Hzero HT. unfold tiled_sum, tile_count, ceil_div.
  set (m := (K / T)%nat). set (r := (K mod T)%nat).
  assert (HK : K = (m * T + r)%nat) by (unfold m, r; rewrite (Nat.div_mod_eq K T) at 1; lia).
  assert (Hr : (r < T)%nat) by (apply Nat.mod_upper_bound; lia).
  assert (Hfull : forall t, (t < m)%nat -> tile_len K T t = T).
  { intros t Ht. unfold tile_len. apply Nat.min_l.
    assert (t * T + T <= m * T)%nat by (replace (t * T + T)%nat with (S t * T)%nat by lia;
                                         apply Nat.mul_le_mono_r; lia).
    lia. }
  destruct (Nat.eq_dec r 0) as [Hr0 | Hr0].
  - assert (Hc : ((K + (T - 1)) / T = m)%nat).
    { rewrite HK, Hr0, Nat.add_0_r.
      replace (m * T + (T - 1))%nat with ((T - 1) + m * T)%nat by lia.
      rewrite Nat.div_add by lia. rewrite Nat.div_small by lia. lia. }
    rewrite Hc.
    rewrite (sum_ext add zero _ (fun t => sum add zero (fun i => f (t * T + i)%nat) T))
      by (intros; rewrite Hfull by assumption; reflexivity).
    rewrite full_tiles by assumption. rewrite HK, Hr0, Nat.add_0_r. reflexivity.
  - assert (Hc : ((K + (T - 1)) / T = S m)%nat).
    { rewrite HK.
      replace (m * T + r + (T - 1))%nat with ((r + (T - 1)) + m * T)%nat by lia.
      rewrite Nat.div_add by lia.
      rewrite <- (Nat.div_unique (r + (T - 1)) T 1 (r - 1)) by lia. lia. }
    rewrite Hc. simpl.
    rewrite (sum_ext add zero _ (fun t => sum add zero (fun i => f (t * T + i)%nat) T))
      by (intros; rewrite Hfull by assumption; reflexivity).
    rewrite full_tiles by assumption.
    assert (Hlast : tile_len K T m = r) by (unfold tile_len; lia).
    rewrite Hlast. rewrite HK at 1. rewrite sum_split by assumption. reflexivity.
Qed.

(** Exact over the integers (the int8 x int4/int3 path with an int32 accumulator). *)
Theorem tiled_sumZ_eq : forall f K T, (0 < T)%nat -> tiled_sumZ f K T = sumZ f K.
Proof. intros. apply tiled_sum_eq; [exact Zadd_assoc' | exact Zadd_0' | assumption]. Qed.

(** Exact over the reals. *)
Theorem tiled_sumR_eq : forall f K T, (0 < T)%nat -> tiled_sumR f K T = sumR f K.
Proof. intros. apply tiled_sum_eq; [exact Radd_assoc' | exact Radd_0' | assumption]. Qed.

(** The tiles of [0..N), listed in order, are [0..N). *)
Theorem tiles_cover : forall N T, (0 < T)%nat ->
  concat (map (fun t => seq (t * T) (tile_len N T t)) (seq 0 (tile_count N T))) = seq 0 N.
Proof.
  intros N T HT. rewrite concat_map_seq_as_sum, seq_as_sum.
  rewrite (sum_ext _ _ _ (fun t => sum (@app nat) [] (fun i => [t * T + i]%nat) (tile_len N T t)))
    by (intros; apply seq_as_sum).
  apply (tiled_sum_eq (@app nat) [] (fun i => [0 + i]%nat) N T);
    [exact app_assoc' | exact app_nil' | exact HT].
Qed.

(** The running total after [t] tiles is the prefix sum of the first [min(t*T, K)] terms
    (so every intermediate value of a tiled loop is a sum of consecutive terms). *)
Theorem tiled_prefix : forall {A} (add : A -> A -> A) zero f K T t,
  (forall x y z, add x (add y z) = add (add x y) z) ->
  (forall x, add x zero = x) ->
  sum add zero (fun t' => sum add zero (fun i => f (t' * T + i)%nat) (tile_len K T t')) t
  = sum add zero f (Nat.min (t * T) K).
Proof.
  intros A add zero f K T t Hassoc Hzero. induction t as [|t IH].
  - reflexivity.
  - simpl sum at 1. rewrite IH.
    assert (Hm : Nat.min (S t * T) K = (Nat.min (t * T) K + tile_len K T t)%nat).
    { unfold tile_len. replace (S t * T)%nat with (t * T + T)%nat by lia. lia. }
    rewrite Hm, sum_split by assumption. f_equal.
    apply sum_ext. intros i Hi. f_equal. unfold tile_len in Hi. lia.
Qed.

(** ** Dequantized matrix-vector product *)

Section Matvec.

(** The dequantization of one weight, e.g. [Quant.dequant_real] (exact) or
    [Binary32.dequant] (binary32); the theorems hold for any choice. *)
Context (deq : R -> R -> Z -> R).

(** Weight [(r, k)] of a q35 tensor: group [k / G] of row [r], step [s4] for even [k]
    (4-bit codes) and [s3] for odd [k] (3-bit codes). *)
Definition dequant_weight (G : nat) (mins s4 s3 : nat -> nat -> R)
    (codes : nat -> nat -> Z) (r k : nat) : R :=
  deq (mins r (k / G)%nat) (if Nat.even k then s4 r (k / G)%nat else s3 r (k / G)%nat)
      (codes r k).

(** [y = W x] for [W] of shape [N x K], untiled. *)
Definition dequant_matvec G mins s4 s3 codes (x : nat -> R) (N K : nat) : list R :=
  map (fun r => sumR (fun k => (dequant_weight G mins s4 s3 codes r k * x k)%R) K) (seq 0 N).

(** The same with row tiles of [Tn] rows and K tiles of [Tk] (e.g. 320 x 320). *)
Definition tiled_dequant_matvec G mins s4 s3 codes (x : nat -> R) (N K Tn Tk : nat) : list R :=
  concat (map (fun rt =>
    map (fun r => tiled_sumR (fun k => (dequant_weight G mins s4 s3 codes r k * x k)%R) K Tk)
        (seq (rt * Tn) (tile_len N Tn rt)))
    (seq 0 (tile_count N Tn))).

Theorem tiled_dequant_matvec_eq : forall G mins s4 s3 codes x N K Tn Tk,
  (0 < Tn)%nat -> (0 < Tk)%nat ->
  tiled_dequant_matvec G mins s4 s3 codes x N K Tn Tk = dequant_matvec G mins s4 s3 codes x N K.
Proof.
  intros G mins s4 s3 codes x N K Tn Tk HTn HTk.
  unfold tiled_dequant_matvec, dequant_matvec.
  set (g := fun r => sumR (fun k => (dequant_weight G mins s4 s3 codes r k * x k)%R) K).
  rewrite (map_ext_in _ (fun rt => map g (seq (rt * Tn) (tile_len N Tn rt)))).
  - rewrite <- (tiles_cover N Tn HTn).
    rewrite concat_map, map_map. reflexivity.
  - intros rt _. apply map_ext. intros r. unfold g. apply tiled_sumR_eq. exact HTk.
Qed.

End Matvec.
