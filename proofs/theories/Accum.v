(** * Integer path: int8 activations times (code - zero point), int32 accumulation.

    [x_i] in [[-128, 127]] (int8), [c_i = q_i - z_i] with an integer zero point, so
    [|c_i| <= C] ([C = 15] for q35: [q, z] in [[0, 15]] for 4-bit codes, [[0, 7]] for
    3-bit codes). The accumulator is an [i32]. *)

From Coq Require Import ZArith Lia List.
From Q35 Require Import Format Sums Tiling.
Local Open Scope Z_scope.

Definition INT8_MIN : Z := -128.
Definition INT8_MAX : Z := 127.
Definition I32_MIN : Z := - 2 ^ 31.
Definition I32_MAX : Z := 2 ^ 31 - 1.

(** Exact dot product [sum_{i<K} x_i * c_i]. *)
Definition dot_int (x c : nat -> Z) (K : nat) : Z := sumZ (fun i => x i * c i) K.

(** Inputs of the integer path: int8 activations, weights bounded by [C]. *)
Definition int_inputs (C : Z) (x c : nat -> Z) (K : nat) : Prop :=
  forall i, (i < K)%nat -> INT8_MIN <= x i <= INT8_MAX /\ Z.abs (c i) <= C.

(** Largest [K] for which [128 * C * K <= 2^31 - 1]. *)
Definition K_max (C : Z) : Z := I32_MAX / (128 * C).

Theorem code_minus_zero_bound : forall L q z,
  0 <= q <= L -> 0 <= z <= L -> Z.abs (q - z) <= L.
Proof. intros. apply Z.abs_le. lia. Qed.

(** q35: 4-bit codes with a 4-bit zero point, 3-bit codes with a 3-bit zero point;
    every weight of a row is within [L4 = 15]. *)
Theorem q35_code_bound : forall q z,
  (0 <= q <= L4 /\ 0 <= z <= L4) \/ (0 <= q <= L3 /\ 0 <= z <= L3) ->
  Z.abs (q - z) <= 15.
Proof. unfold L4, L3. intros q z H. apply Z.abs_le. lia. Qed.

Lemma term_bound : forall C x c,
  INT8_MIN <= x <= INT8_MAX -> Z.abs c <= C -> Z.abs (x * c) <= 128 * C.
Proof.
  unfold INT8_MIN, INT8_MAX. intros C x c Hx Hc.
  rewrite Z.abs_mul. apply Z.mul_le_mono_nonneg; [lia | lia | lia | exact Hc].
Qed.

(** A sum of [n] consecutive terms starting at [a] is at most [128 * C * n] in size. *)
Lemma range_sum_bound : forall C x c K a n,
  int_inputs C x c K -> (a + n <= K)%nat ->
  Z.abs (sumZ (fun i => x (a + i)%nat * c (a + i)%nat) n) <= 128 * C * Z.of_nat n.
Proof.
  intros C x c K a n Hin Han. induction n as [|n IH].
  - simpl. lia.
  - unfold sumZ in *. simpl sum.
    destruct (Hin (a + n)%nat ltac:(lia)) as [Hx Hc].
    assert (Ht := term_bound C _ _ Hx Hc).
    specialize (IH ltac:(lia)).
    eapply Z.le_trans; [apply Z.abs_triangle|]. lia.
Qed.

(** The accumulator bound: [|sum_{i<K} x_i c_i| <= 128 * C * K]. *)
Theorem accum_bound : forall C x c K,
  int_inputs C x c K -> Z.abs (dot_int x c K) <= 128 * C * Z.of_nat K.
Proof.
  intros C x c K Hin. unfold dot_int.
  assert (H := range_sum_bound C x c K 0 K Hin ltac:(lia)). exact H.
Qed.

Theorem accum_bound_C15 : forall x c K,
  int_inputs 15 x c K -> Z.abs (dot_int x c K) <= 1920 * Z.of_nat K.
Proof. intros. apply (accum_bound 15). assumption. Qed.

Lemma int_inputs_prefix : forall C x c K k,
  int_inputs C x c K -> (k <= K)%nat -> int_inputs C x c k.
Proof. intros C x c K k H Hk i Hi. apply H. lia. Qed.

(** No overflow: for [K <= K_max C], every partial sum (hence every value the
    accumulator takes, and the result) lies in [[-2^31, 2^31 - 1]]. *)
Theorem accum_no_overflow : forall C x c K,
  0 < C -> Z.of_nat K <= K_max C -> int_inputs C x c K ->
  forall k, (k <= K)%nat -> I32_MIN <= dot_int x c k <= I32_MAX.
Proof.
  intros C x c K HC HK Hin k Hk.
  assert (H := accum_bound C x c k (int_inputs_prefix C x c K k Hin Hk)).
  assert (Hdiv : 128 * C * K_max C <= I32_MAX).
  { unfold K_max. apply Z.mul_div_le. lia. }
  assert (Hk' : 128 * C * Z.of_nat k <= 128 * C * K_max C)
    by (apply Z.mul_le_mono_nonneg_l; lia).
  apply Z.abs_le in H. unfold I32_MIN, I32_MAX in *. lia.
Qed.

(** Sum of a constant. *)
Lemma dot_int_const : forall a b n,
  dot_int (fun _ => a) (fun _ => b) n = a * b * Z.of_nat n.
Proof.
  intros a b n. unfold dot_int, sumZ. induction n as [|n IH].
  - simpl. lia.
  - simpl sum. rewrite IH. lia.
Qed.

(** [K_max] is the largest such [K]: at [K_max C + 1] the bound exceeds [2^31 - 1]
    and is reached by [x_i = -128], [c_i = -C]. *)
Theorem K_max_tight : forall C,
  0 < C ->
  128 * C * K_max C <= I32_MAX /\
  dot_int (fun _ => -128) (fun _ => - C) (Z.to_nat (K_max C + 1)) = 128 * C * (K_max C + 1) /\
  128 * C * (K_max C + 1) > I32_MAX.
Proof.
  intros C HC.
  assert (Hk0 : 0 <= K_max C) by (unfold K_max, I32_MAX; apply Z.div_pos; lia).
  split; [|split].
  - unfold K_max. apply Z.mul_div_le. lia.
  - rewrite dot_int_const, Z2Nat.id by lia. ring.
  - unfold K_max. assert (H := Z.mul_succ_div_gt I32_MAX (128 * C) ltac:(lia)). lia.
Qed.

(** ** The constants the checker uses *)

Theorem K_max_15 : K_max 15 = 1118481.
Proof. reflexivity. Qed.

Theorem K_max_7 : K_max 7 = 2396745.
Proof. reflexivity. Qed.

(** The CPU integer path scales codes to a common step (7·q4 and 15·q3, so
    both planes of a group share one accumulator): [C = 105]. *)
Theorem K_max_105 : K_max 105 = 159783.
Proof. reflexivity. Qed.

Theorem K_max_15_tight : 1920 * 1118481 <= I32_MAX /\ 1920 * 1118482 > I32_MAX.
Proof. unfold I32_MAX. split; [compute; discriminate | reflexivity]. Qed.

(** q35 ([C = 15]): for every [K <= 1118481], all partial sums fit in an [i32]. *)
Theorem accum_no_overflow_C15 : forall x c K,
  Z.of_nat K <= 1118481 -> int_inputs 15 x c K ->
  forall k, (k <= K)%nat -> I32_MIN <= dot_int x c k <= I32_MAX.
Proof.
  intros x c K HK Hin. apply (accum_no_overflow 15 x c K); [lia | | exact Hin].
  rewrite K_max_15. lia.
Qed.

Theorem accum_no_overflow_C7 : forall x c K,
  Z.of_nat K <= 2396745 -> int_inputs 7 x c K ->
  forall k, (k <= K)%nat -> I32_MIN <= dot_int x c k <= I32_MAX.
Proof.
  intros x c K HK Hin. apply (accum_no_overflow 7 x c K); [lia | | exact Hin].
  rewrite K_max_7. lia.
Qed.

Theorem accum_no_overflow_C105 : forall x c K,
  Z.of_nat K <= 159783 -> int_inputs 105 x c K ->
  forall k, (k <= K)%nat -> I32_MIN <= dot_int x c k <= I32_MAX.
Proof.
  intros x c K HK Hin. apply (accum_no_overflow 105 x c K); [lia | | exact Hin].
  rewrite K_max_105. lia.
Qed.

(** ** The i32 loop as it runs *)

(** Two's-complement wrap-around to 32 bits ([i32::wrapping_add] and release-mode [+]). *)
Definition wrap_i32 (z : Z) : Z := (z + 2 ^ 31) mod 2 ^ 32 - 2 ^ 31.

(** [let mut acc: i32 = 0; for i in 0..k { acc = acc.wrapping_add(x[i] as i32 * c[i] as i32); }] *)
Fixpoint acc_i32 (x c : nat -> Z) (k : nat) : Z :=
  match k with
  | O => 0
  | S k' => wrap_i32 (acc_i32 x c k' + wrap_i32 (x k' * c k'))
  end.

Lemma wrap_i32_id : forall z, I32_MIN <= z <= I32_MAX -> wrap_i32 z = z.
Proof.
  unfold wrap_i32, I32_MIN, I32_MAX. intros z Hz.
  rewrite Z.mod_small by lia. lia.
Qed.

(** The wrapping i32 loop computes the exact dot product (no wrap ever happens). *)
Theorem acc_i32_exact : forall C x c K,
  0 < C -> Z.of_nat K <= K_max C -> int_inputs C x c K ->
  acc_i32 x c K = dot_int x c K.
Proof.
  intros C x c K HC HK Hin.
  assert (Hall : forall k, (k <= K)%nat -> acc_i32 x c k = dot_int x c k).
  { induction k as [|k IH]; intros Hk.
    - reflexivity.
    - simpl. rewrite IH by lia.
      destruct (Hin k ltac:(lia)) as [Hx Hc].
      assert (Ht := term_bound C _ _ Hx Hc).
      assert (Hc128 : 128 * C <= I32_MAX).
      { assert (128 * C * 1 <= 128 * C * K_max C).
        { apply Z.mul_le_mono_nonneg_l; [lia|]. lia. }
        assert (128 * C * K_max C <= I32_MAX) by (unfold K_max; apply Z.mul_div_le; lia).
        lia. }
      rewrite (wrap_i32_id (x k * c k)) by (apply Z.abs_le in Ht; unfold I32_MIN, I32_MAX in *; lia).
      apply wrap_i32_id.
      exact (accum_no_overflow C x c K HC HK Hin (S k) Hk). }
  apply Hall. lia.
Qed.

(** ** Tiled integer accumulation *)

(** Tiling along K gives the same integer result ... *)
Theorem tiled_dot_int_eq : forall x c K T,
  (0 < T)%nat -> tiled_sumZ (fun i => x i * c i) K T = dot_int x c K.
Proof. intros. apply tiled_sumZ_eq. assumption. Qed.

(** ... and no intermediate value of the tiled loop overflows: neither a tile's partial
    sum (the first [j] terms of tile [t]) nor the running total plus it. *)
Theorem tiled_no_overflow : forall C x c K T,
  0 < C -> Z.of_nat K <= K_max C -> int_inputs C x c K -> (0 < T)%nat ->
  forall t j, (t < tile_count K T)%nat -> (j <= tile_len K T t)%nat ->
  let part := sumZ (fun i => x (t * T + i)%nat * c (t * T + i)%nat) j in
  let running := sum Z.add 0
       (fun t' => sumZ (fun i => x (t' * T + i)%nat * c (t' * T + i)%nat) (tile_len K T t')) t in
  I32_MIN <= part <= I32_MAX /\ I32_MIN <= running + part <= I32_MAX.
Proof.
  intros C x c K T HC HK Hin HT t j Ht Hj part running.
  assert (Hstart := tile_start_lt K T t HT Ht).
  assert (Hlen : (t * T + j <= K)%nat) by (unfold tile_len in Hj; lia).
  assert (Hdiv : 128 * C * K_max C <= I32_MAX) by (unfold K_max; apply Z.mul_div_le; lia).
  split.
  - assert (H := range_sum_bound C x c K (t * T) j Hin Hlen).
    assert (128 * C * Z.of_nat j <= 128 * C * K_max C)
      by (apply Z.mul_le_mono_nonneg_l; lia).
    apply Z.abs_le in H. unfold part, I32_MIN, I32_MAX in *. lia.
  - assert (Hrun : running = dot_int x c (t * T)).
    { unfold running, dot_int, sumZ.
      rewrite (tiled_prefix Z.add 0 (fun i => x i * c i) K T t Zadd_assoc' Zadd_0').
      f_equal. lia. }
    assert (Hsplit : running + part = dot_int x c (t * T + j)).
    { rewrite Hrun. unfold dot_int, part, sumZ.
      rewrite sum_split by (exact Zadd_assoc' || exact Zadd_0'). reflexivity. }
    rewrite Hsplit. apply (accum_no_overflow C x c K HC HK Hin). exact Hlen.
Qed.
