(** * q35 weight format, layout v1 ("planar"): packing and unpacking of one group block.

    Mirrors [runtime/format] (crate [q35-format]) and docs/format-spec-draft.md.

    A group block of [n] weights holds [n4 = ceil(n/2)] 4-bit codes [q4] (elements 0,2,4,...)
    and [n3 = floor(n/2)] 3-bit codes [q3] (elements 1,3,5,...), stored as three planes,
    back to back:
    - nib plane: [ceil(n4/2)] bytes; [q4[j]] in byte [j/2], bits [4*(j%2) .. 4*(j%2)+3];
    - lo2 plane: [ceil(n3/4)] bytes; [q3[j] & 3] in byte [j/4], bits [2*(j%4) .. +1];
    - hi1 plane: [ceil(n3/8)] bytes; [q3[j] >> 2] in byte [j/8], bit [j%8];
    unused padding bits are zero.

    Bytes and codes are integers ([Z]) and all bit manipulation is done with
    [Z.lor], [Z.land], [Z.shiftl], [Z.shiftr], as the Rust code does on [u8]. *)

From Coq Require Import ZArith Lia List ZifyNat.
Import ListNotations.
Local Open Scope Z_scope.

Ltac nat_arith := zify; Z.div_mod_to_equations; lia.

(** ** Constants and sizes *)

(** Largest 4-bit and 3-bit code ([q35_format::L4], [q35_format::L3]). *)
Definition L4 : Z := 15.
Definition L3 : Z := 7.

(** [a.div_ceil(b)] in Rust (for [b > 0]). *)
Definition ceil_div (a b : nat) : nat := (a + (b - 1)) / b.

(** Number of 4-bit and 3-bit codes in a group of [n] weights. *)
Definition n4_of (n : nat) : nat := ceil_div n 2.
Definition n3_of (n : nat) : nat := n / 2.

Definition nib_bytes (n : nat) : nat := ceil_div (n4_of n) 2.
Definition lo2_bytes (n : nat) : nat := ceil_div (n3_of n) 4.
Definition hi1_bytes (n : nat) : nat := ceil_div (n3_of n) 8.

(** [q35_format::block_bytes(n)]. *)
Definition block_bytes (n : nat) : nat := nib_bytes n + lo2_bytes n + hi1_bytes n.

(** ** Packing *)

(** [code l j] is [l.get(j).copied().unwrap_or(0)]: codes past the end read as 0,
    which is what makes the padding bits zero. *)
Definition code (l : list Z) (j : nat) : Z := nth j l 0.

(** One byte built from [k] fields of [w] bits:
    [let mut b = 0; for i in 0..k { b |= get(i) << (w*i); }]. *)
Fixpoint pack_bits (w : Z) (get : nat -> Z) (k : nat) : Z :=
  match k with
  | O => 0
  | S k' => Z.lor (pack_bits w get k') (Z.shiftl (get k') (w * Z.of_nat k'))
  end.

(** Byte [b] of each plane. *)
Definition nib_byte (q4 : list Z) (b : nat) : Z :=
  pack_bits 4 (fun i => code q4 (2 * b + i)) 2.
Definition lo2_byte (q3 : list Z) (b : nat) : Z :=
  pack_bits 2 (fun i => Z.land (code q3 (4 * b + i)) 3) 4.
Definition hi1_byte (q3 : list Z) (b : nat) : Z :=
  pack_bits 1 (fun i => Z.shiftr (code q3 (8 * b + i)) 2) 8.

Definition nib_plane (q4 : list Z) : list Z :=
  map (nib_byte q4) (seq 0 (ceil_div (length q4) 2)).
Definition lo2_plane (q3 : list Z) : list Z :=
  map (lo2_byte q3) (seq 0 (ceil_div (length q3) 4)).
Definition hi1_plane (q3 : list Z) : list Z :=
  map (hi1_byte q3) (seq 0 (ceil_div (length q3) 8)).

(** [q35_format::pack_group(q4, q3)]: the block of one group. *)
Definition pack_group (q4 q3 : list Z) : list Z :=
  nib_plane q4 ++ lo2_plane q3 ++ hi1_plane q3.

(** ** Unpacking *)

(** [q35_format::unpack_group(n, bytes)]: reads the codes back with shifts and masks. *)
Definition unpack_q4 (n : nat) (bytes : list Z) (j : nat) : Z :=
  Z.land (Z.shiftr (nth (j / 2) bytes 0) (4 * Z.of_nat (j mod 2))) 15.

Definition unpack_q3 (n : nat) (bytes : list Z) (j : nat) : Z :=
  let lo := Z.land (Z.shiftr (nth (nib_bytes n + j / 4) bytes 0)
                             (2 * Z.of_nat (j mod 4))) 3 in
  let hi := Z.land (Z.shiftr (nth (nib_bytes n + lo2_bytes n + j / 8) bytes 0)
                             (Z.of_nat (j mod 8))) 1 in
  Z.lor lo (Z.shiftl hi 2).

Definition unpack_group (n : nat) (bytes : list Z) : list Z * list Z :=
  (map (unpack_q4 n bytes) (seq 0 (n4_of n)),
   map (unpack_q3 n bytes) (seq 0 (n3_of n))).

(** ** Bit-arithmetic lemmas *)

Lemma lor_disjoint : forall a b m,
  0 <= m -> 0 <= a < 2 ^ m ->
  Z.lor a (Z.shiftl b m) = a + b * 2 ^ m.
Proof.
  intros a b m Hm Ha.
  assert (Hland : Z.land a (Z.shiftl b m) = 0).
  { apply Z.bits_inj'. intros i Hi.
    rewrite Z.land_spec, Z.bits_0.
    destruct (Z.lt_ge_cases i m) as [Hlt | Hge].
    - rewrite (Z.shiftl_spec_low b m i Hlt). apply Bool.andb_false_r.
    - rewrite <- (Z.mod_small a (2 ^ m)) by lia.
      rewrite Z.mod_pow2_bits_high by lia. reflexivity. }
  rewrite <- Z.lxor_lor by exact Hland.
  rewrite <- Z.add_nocarry_lxor by exact Hland.
  rewrite Z.shiftl_mul_pow2 by lia. reflexivity.
Qed.

Lemma field_arith : forall x w i,
  0 <= w -> 0 <= i ->
  Z.land (Z.shiftr x (w * i)) (Z.ones w) = (x / 2 ^ (w * i)) mod 2 ^ w.
Proof.
  intros. rewrite Z.shiftr_div_pow2 by nia. apply Z.land_ones. lia.
Qed.

(** [pack_bits] is the sum of the fields, each shifted into place, and fits in [w*k] bits. *)
Lemma pack_bits_sum : forall w get k,
  0 < w ->
  (forall i, (i < k)%nat -> 0 <= get i < 2 ^ w) ->
  0 <= pack_bits w get k < 2 ^ (w * Z.of_nat k) /\
  forall k', (k' < k)%nat ->
    pack_bits w get (S k') = pack_bits w get k' + get k' * 2 ^ (w * Z.of_nat k').
Proof.
  intros w get k Hw. induction k as [|k IH]; intros Hget.
  - simpl. rewrite Z.mul_0_r. split; [lia | intros; lia].
  - assert (IH' := IH (fun i Hi => Hget i (Nat.lt_lt_succ_r _ _ Hi))).
    destruct IH' as [[H0 H1] Hstep].
    assert (Hg := Hget k (Nat.lt_succ_diag_r k)).
    assert (Heq : pack_bits w get (S k) = pack_bits w get k + get k * 2 ^ (w * Z.of_nat k)).
    { simpl. apply lor_disjoint; lia. }
    split.
    + rewrite Heq. rewrite Nat2Z.inj_succ, <- Z.add_1_r, Z.mul_add_distr_l, Z.mul_1_r,
        Z.pow_add_r by nia.
      split; [|]; nia.
    + intros k' Hk'. destruct (Nat.eq_dec k' k) as [-> | Hne].
      * exact Heq.
      * apply Hstep. lia.
Qed.

Lemma pack_bits_bound : forall w get k,
  0 < w ->
  (forall i, (i < k)%nat -> 0 <= get i < 2 ^ w) ->
  0 <= pack_bits w get k < 2 ^ (w * Z.of_nat k).
Proof. intros. apply pack_bits_sum; assumption. Qed.

(** Field [i] of a packed byte is [get i]. *)
Lemma pack_bits_field : forall w get k i,
  0 < w ->
  (forall i, (i < k)%nat -> 0 <= get i < 2 ^ w) ->
  (i < k)%nat ->
  (pack_bits w get k / 2 ^ (w * Z.of_nat i)) mod 2 ^ w = get i.
Proof.
  intros w get k i Hw. induction k as [|k IH]; intros Hget Hi.
  - lia.
  - assert (Hget' : forall i, (i < k)%nat -> 0 <= get i < 2 ^ w)
      by (intros; apply Hget; lia).
    destruct (pack_bits_sum w get (S k) Hw Hget) as [_ Hstep].
    rewrite (Hstep k (Nat.lt_succ_diag_r k)).
    destruct (pack_bits_bound w get k Hw Hget') as [Hb0 Hb1].
    assert (Hg := Hget k (Nat.lt_succ_diag_r k)).
    destruct (Nat.eq_dec i k) as [-> | Hne].
    + rewrite Z.div_add by (apply Z.pow_nonzero; lia).
      rewrite Z.div_small by lia. rewrite Z.add_0_l. apply Z.mod_small. lia.
    + assert (Hik : (i < k)%nat) by lia.
      replace (w * Z.of_nat k) with (w * Z.of_nat i + w + w * Z.of_nat (k - i - 1))
        by (rewrite !Nat2Z.inj_sub by lia; lia).
      rewrite !Z.pow_add_r by (try apply Z.mul_nonneg_nonneg; lia).
      replace (get k * (2 ^ (w * Z.of_nat i) * 2 ^ w * 2 ^ (w * Z.of_nat (k - i - 1))))
        with (get k * 2 ^ w * 2 ^ (w * Z.of_nat (k - i - 1)) * 2 ^ (w * Z.of_nat i))
        by ring.
      rewrite Z.div_add by (apply Z.pow_nonzero; lia).
      replace (get k * 2 ^ w * 2 ^ (w * Z.of_nat (k - i - 1)))
        with ((get k * 2 ^ (w * Z.of_nat (k - i - 1))) * 2 ^ w) by ring.
      rewrite Z.mod_add by (apply Z.pow_nonzero; lia).
      apply IH; assumption.
Qed.

(** The same, stated with the shifts and masks that [unpack_group] uses. *)
Lemma pack_bits_unpack : forall w get k i,
  0 < w ->
  (forall i, (i < k)%nat -> 0 <= get i < 2 ^ w) ->
  (i < k)%nat ->
  Z.land (Z.shiftr (pack_bits w get k) (w * Z.of_nat i)) (Z.ones w) = get i.
Proof.
  intros. rewrite field_arith by lia. apply pack_bits_field; assumption.
Qed.

(** Fields past [r] that are zero leave the high bits of the byte zero. *)
Lemma pack_bits_high_zero : forall w get k r,
  0 < w -> (r <= k)%nat ->
  (forall i, (i < k)%nat -> 0 <= get i < 2 ^ w) ->
  (forall i, (r <= i < k)%nat -> get i = 0) ->
  forall p, w * Z.of_nat r <= p -> Z.testbit (pack_bits w get k) p = false.
Proof.
  intros w get k r Hw Hr Hget Hz p Hp.
  assert (Hkr : pack_bits w get k = pack_bits w get r).
  { induction k as [|k IH].
    - assert (r = 0%nat) by lia. subst. reflexivity.
    - destruct (Nat.eq_dec r (S k)) as [-> | Hne]; [reflexivity|].
      assert (Hget' : forall i, (i < k)%nat -> 0 <= get i < 2 ^ w)
        by (intros; apply Hget; lia).
      simpl. rewrite (Hz k) by lia. rewrite Z.shiftl_0_l, Z.lor_0_r.
      apply IH; [lia | exact Hget' | intros; apply Hz; lia]. }
  rewrite Hkr.
  assert (Hget' : forall i, (i < r)%nat -> 0 <= get i < 2 ^ w)
    by (intros; apply Hget; lia).
  destruct (pack_bits_bound w get r Hw Hget') as [Hb0 Hb1].
  rewrite <- (Z.mod_small (pack_bits w get r) (2 ^ (w * Z.of_nat r))) by lia.
  apply Z.mod_pow2_bits_high. lia.
Qed.

(** ** Lists *)

Lemma nth_map_seq_Z : forall (f : nat -> Z) m j d,
  (j < m)%nat -> nth j (map f (seq 0 m)) d = f j.
Proof.
  intros f m j d Hj.
  rewrite nth_indep with (d' := f 0%nat) by (rewrite map_length, seq_length; exact Hj).
  rewrite map_nth, seq_nth by exact Hj. reflexivity.
Qed.

Lemma nth_app_l : forall (l1 l2 : list Z) j,
  (j < length l1)%nat -> nth j (l1 ++ l2) 0 = nth j l1 0.
Proof. intros. apply app_nth1. assumption. Qed.

Lemma nth_app_r : forall (l1 l2 : list Z) j,
  nth (length l1 + j) (l1 ++ l2) 0 = nth j l2 0.
Proof.
  intros. rewrite app_nth2 by lia. f_equal. lia.
Qed.

Lemma code_range : forall l c j,
  Forall (fun x => 0 <= x < c) l -> 0 < c -> 0 <= code l j < c.
Proof.
  intros l c j Hl Hc. unfold code.
  destruct (Nat.lt_ge_cases j (length l)) as [Hj | Hj].
  - rewrite Forall_forall in Hl. apply Hl. apply nth_In. exact Hj.
  - rewrite nth_overflow by exact Hj. lia.
Qed.

Lemma code_nth : forall l j d, (j < length l)%nat -> code l j = nth j l d.
Proof. intros. unfold code. apply nth_indep. assumption. Qed.

(** ** Main theorems *)

Definition codes_ok (n : nat) (q4 q3 : list Z) : Prop :=
  length q4 = n4_of n /\ length q3 = n3_of n /\
  Forall (fun c => 0 <= c <= L4) q4 /\ Forall (fun c => 0 <= c <= L3) q3.

Lemma codes_ok_ranges : forall n q4 q3, codes_ok n q4 q3 ->
  (forall j, 0 <= code q4 j < 16) /\ (forall j, 0 <= code q3 j < 8).
Proof.
  intros n q4 q3 (_ & _ & H4 & H3). split; intro j; apply code_range; try lia.
  - eapply Forall_impl; [|exact H4]. unfold L4. simpl. lia.
  - eapply Forall_impl; [|exact H3]. unfold L3. simpl. lia.
Qed.

Lemma nib_plane_length : forall q4, length (nib_plane q4) = ceil_div (length q4) 2.
Proof. intros. unfold nib_plane. rewrite map_length, seq_length. reflexivity. Qed.
Lemma lo2_plane_length : forall q3, length (lo2_plane q3) = ceil_div (length q3) 4.
Proof. intros. unfold lo2_plane. rewrite map_length, seq_length. reflexivity. Qed.
Lemma hi1_plane_length : forall q3, length (hi1_plane q3) = ceil_div (length q3) 8.
Proof. intros. unfold hi1_plane. rewrite map_length, seq_length. reflexivity. Qed.

(** [pack_group] writes exactly [block_bytes n] bytes. *)
Theorem pack_group_length : forall n q4 q3,
  length q4 = n4_of n -> length q3 = n3_of n ->
  length (pack_group q4 q3) = block_bytes n.
Proof.
  intros n q4 q3 H4 H3. unfold pack_group, block_bytes.
  rewrite !app_length, nib_plane_length, lo2_plane_length, hi1_plane_length, H4, H3.
  unfold nib_bytes, lo2_bytes, hi1_bytes. lia.
Qed.

Theorem block_bytes_128 : block_bytes 128 = 56%nat.
Proof. reflexivity. Qed.

(** 16 weights take 7 bytes: 3.5 bits per weight for every multiple of 16. *)
Lemma ceil_div_mul : forall k b, (0 < b)%nat -> ceil_div (k * b) b = k.
Proof.
  intros k b Hb. unfold ceil_div. rewrite Nat.div_add_l by lia.
  rewrite Nat.div_small by lia. lia.
Qed.

Theorem block_bytes_mul16 : forall m, block_bytes (16 * m) = (7 * m)%nat.
Proof.
  intros m. unfold block_bytes, nib_bytes, lo2_bytes, hi1_bytes, n4_of, n3_of.
  replace (16 * m)%nat with (8 * m * 2)%nat by lia.
  rewrite ceil_div_mul, Nat.div_mul by lia.
  replace (8 * m)%nat with (4 * m * 2)%nat by lia. rewrite ceil_div_mul by lia.
  replace (4 * m * 2)%nat with (2 * m * 4)%nat by lia. rewrite ceil_div_mul by lia.
  replace (2 * m * 4)%nat with (m * 8)%nat by lia. rewrite ceil_div_mul by lia.
  lia.
Qed.

Lemma pack_bits_byte : forall w get k,
  0 < w -> w * Z.of_nat k = 8 ->
  (forall i, (i < k)%nat -> 0 <= get i < 2 ^ w) ->
  0 <= pack_bits w get k < 256.
Proof.
  intros w get k Hw Hk Hget.
  change 256 with (2 ^ 8). rewrite <- Hk. apply pack_bits_bound; assumption.
Qed.

Lemma q3_hi_range : forall c, 0 <= c < 8 -> 0 <= Z.shiftr c 2 < 2 ^ 1.
Proof.
  intros c Hc. rewrite Z.shiftr_div_pow2 by lia.
  change (2 ^ 2) with 4. change (2 ^ 1) with 2.
  split; [apply Z.div_pos | apply Z.div_lt_upper_bound]; lia.
Qed.

Lemma q3_lo_range : forall c, 0 <= Z.land c 3 < 2 ^ 2.
Proof.
  intros c. change 3 with (Z.ones 2). rewrite Z.land_ones by lia.
  apply Z.mod_pos_bound. lia.
Qed.

(** Every written byte fits in a [u8]. *)
Theorem pack_group_bytes : forall n q4 q3, codes_ok n q4 q3 ->
  Forall (fun b => 0 <= b < 256) (pack_group q4 q3).
Proof.
  intros n q4 q3 Hok. destruct (codes_ok_ranges n q4 q3 Hok) as [R4 R3].
  unfold pack_group, nib_plane, lo2_plane, hi1_plane.
  apply Forall_app. split; [|apply Forall_app; split];
    apply Forall_forall; intros b Hb;
    apply in_map_iff in Hb; destruct Hb as [x [<- _]].
  - apply pack_bits_byte; [lia | reflexivity |]. intros. apply R4.
  - apply pack_bits_byte; [lia | reflexivity |]. intros. apply q3_lo_range.
  - apply pack_bits_byte; [lia | reflexivity |]. intros. apply q3_hi_range, R3.
Qed.

(** Round trip: unpacking a packed block gives back the codes, for every [n]
    (tails included). *)
Theorem unpack_pack_group : forall n q4 q3, codes_ok n q4 q3 ->
  unpack_group n (pack_group q4 q3) = (q4, q3).
Proof.
  intros n q4 q3 Hok. destruct (codes_ok_ranges n q4 q3 Hok) as [R4 R3].
  destruct Hok as (H4 & H3 & _ & _).
  unfold unpack_group. f_equal.
  - apply nth_ext with (d := 0) (d' := 0).
    { rewrite map_length, seq_length. auto. }
    intros j Hj. rewrite map_length, seq_length in Hj.
    rewrite nth_map_seq_Z by exact Hj.
    rewrite <- (code_nth q4 j 0) by lia.
    unfold unpack_q4, pack_group.
    rewrite nth_app_l by (rewrite nib_plane_length; unfold ceil_div; nat_arith).
    unfold nib_plane. rewrite nth_map_seq_Z by (unfold ceil_div; nat_arith).
    unfold nib_byte. change 15 with (Z.ones 4).
    rewrite (pack_bits_unpack 4 _ 2 (j mod 2)).
    + f_equal. nat_arith.
    + lia.
    + intros. apply R4.
    + apply Nat.mod_upper_bound. lia.
  - apply nth_ext with (d := 0) (d' := 0).
    { rewrite map_length, seq_length. auto. }
    intros j Hj. rewrite map_length, seq_length in Hj.
    rewrite nth_map_seq_Z by exact Hj.
    rewrite <- (code_nth q3 j 0) by lia.
    unfold unpack_q3, pack_group.
    assert (Hnib : length (nib_plane q4) = nib_bytes n)
      by (rewrite nib_plane_length, H4; reflexivity).
    assert (Hlo : length (lo2_plane q3) = lo2_bytes n)
      by (rewrite lo2_plane_length, H3; reflexivity).
    rewrite <- Hnib, nth_app_r.
    rewrite <- Hlo, <- Nat.add_assoc, nth_app_r, nth_app_r.
    rewrite nth_app_l by (rewrite lo2_plane_length, H3; unfold ceil_div; nat_arith).
    unfold lo2_plane, hi1_plane.
    rewrite nth_map_seq_Z by (rewrite H3; unfold ceil_div; nat_arith).
    rewrite nth_map_seq_Z by (rewrite H3; unfold ceil_div; nat_arith).
    unfold lo2_byte, hi1_byte. change 3 with (Z.ones 2). change 1 with (Z.ones 1).
    rewrite (pack_bits_unpack 2 _ 4 (j mod 4)).
    2: lia.
    2: { intros. apply q3_lo_range. }
    2: { apply Nat.mod_upper_bound. lia. }
    replace (Z.of_nat (j mod 8)) with (1 * Z.of_nat (j mod 8)) by lia.
    rewrite (pack_bits_unpack 1 _ 8 (j mod 8)).
    2: lia.
    2: { intros. apply q3_hi_range, R3. }
    2: { apply Nat.mod_upper_bound. lia. }
    replace (4 * (j / 4) + j mod 4)%nat with j by nat_arith.
    replace (8 * (j / 8) + j mod 8)%nat with j by nat_arith.
    specialize (R3 j).
    rewrite Z.land_ones by lia. rewrite Z.shiftr_div_pow2 by lia.
    rewrite lor_disjoint.
    + change (2 ^ 2) with 4. change (2 ^ 1) with 2.
      rewrite Z.mul_comm, Z.add_comm. symmetry. apply Z.div_mod. lia.
    + lia.
    + apply Z.mod_pos_bound. lia.
Qed.

(** Unused padding bits are zero. A bit [p] of a byte belongs to the code whose index
    is computed below; when that index is past the last code, the bit is 0. *)
Theorem pack_group_padding_zero : forall n q4 q3, codes_ok n q4 q3 ->
  (forall b p, (b < nib_bytes n)%nat -> 0 <= p < 8 ->
     (n4_of n <= 2 * b + Z.to_nat (p / 4))%nat ->
     Z.testbit (nth b (pack_group q4 q3) 0) p = false) /\
  (forall b p, (b < lo2_bytes n)%nat -> 0 <= p < 8 ->
     (n3_of n <= 4 * b + Z.to_nat (p / 2))%nat ->
     Z.testbit (nth (nib_bytes n + b) (pack_group q4 q3) 0) p = false) /\
  (forall b p, (b < hi1_bytes n)%nat -> 0 <= p < 8 ->
     (n3_of n <= 8 * b + Z.to_nat p)%nat ->
     Z.testbit (nth (nib_bytes n + lo2_bytes n + b) (pack_group q4 q3) 0) p = false).
Proof.
  intros n q4 q3 Hok. destruct (codes_ok_ranges n q4 q3 Hok) as [R4 R3].
  destruct Hok as (H4 & H3 & _ & _).
  assert (Hnib : length (nib_plane q4) = nib_bytes n)
    by (rewrite nib_plane_length, H4; reflexivity).
  assert (Hlo : length (lo2_plane q3) = lo2_bytes n)
    by (rewrite lo2_plane_length, H3; reflexivity).
  unfold pack_group. split; [|split].
  - intros b p Hb Hp Hidx.
    rewrite nth_app_l by lia. unfold nib_plane.
    rewrite nth_map_seq_Z by (rewrite H4; exact Hb).
    unfold nib_byte.
    set (r := Nat.min 2 (n4_of n - 2 * b)).
    apply (pack_bits_high_zero 4 _ 2 r).
    + lia.
    + unfold r. lia.
    + intros; apply R4.
    + intros i Hi. unfold code. apply nth_overflow. unfold r in Hi. lia.
    + assert (Hq : Z.of_nat (n4_of n) <= 2 * Z.of_nat b + p / 4) by lia.
      unfold r. Z.div_mod_to_equations. lia.
  - intros b p Hb Hp Hidx.
    rewrite <- Hnib, nth_app_r, nth_app_l by lia. unfold lo2_plane.
    rewrite nth_map_seq_Z by (rewrite H3; exact Hb).
    unfold lo2_byte.
    set (r := Nat.min 4 (n3_of n - 4 * b)).
    apply (pack_bits_high_zero 2 _ 4 r).
    + lia.
    + unfold r. lia.
    + intros; apply q3_lo_range.
    + intros i Hi. unfold code. rewrite nth_overflow by (unfold r in Hi; lia). reflexivity.
    + assert (Hq : Z.of_nat (n3_of n) <= 4 * Z.of_nat b + p / 2) by lia.
      unfold r. Z.div_mod_to_equations. lia.
  - intros b p Hb Hp Hidx.
    rewrite <- Hnib, <- Hlo, <- Nat.add_assoc, nth_app_r, nth_app_r. unfold hi1_plane.
    rewrite nth_map_seq_Z by (rewrite H3; exact Hb).
    unfold hi1_byte.
    set (r := Nat.min 8 (n3_of n - 8 * b)).
    apply (pack_bits_high_zero 1 _ 8 r).
    + lia.
    + unfold r. lia.
    + intros; apply q3_hi_range, R3.
    + intros i Hi. unfold code. rewrite nth_overflow by (unfold r in Hi; lia). reflexivity.
    + unfold r. lia.
Qed.

(** For an implementation that scatters codes into a zeroed block
    ([out[j/2] |= q4[j] << 4*(j%2)], [out[nib + j/4] |= (q3[j]&3) << 2*(j%4)],
    [out[nib + lo2 + j/8] |= (q3[j]>>2) << (j%8)]): every index written lies in the
    code's own plane, hence inside the block. *)
Theorem pack_group_writes_in_block : forall n j,
  ((j < n4_of n)%nat -> (j / 2 < nib_bytes n)%nat) /\
  ((j < n3_of n)%nat ->
     (nib_bytes n <= nib_bytes n + j / 4 < nib_bytes n + lo2_bytes n)%nat /\
     (nib_bytes n + lo2_bytes n <= nib_bytes n + lo2_bytes n + j / 8 < block_bytes n)%nat).
Proof.
  intros n j. unfold block_bytes, nib_bytes, lo2_bytes, hi1_bytes, ceil_div.
  split; intros; nat_arith.
Qed.

(** ** Test vectors (the Rust crate's unit tests can use the same bytes) *)

(** [n = 5]: q4 = [1, 2, 3], q3 = [5, 6].
    nib: [1 | 2<<4, 3] = [0x21, 0x03]; lo2: [(5&3) | (6&3)<<2] = [0x09];
    hi1: [(5>>2) | (6>>2)<<1] = [0x03]. *)
Example pack_group_example_5 :
  pack_group [1; 2; 3] [5; 6] = [33; 3; 9; 3] /\
  unpack_group 5 [33; 3; 9; 3] = ([1; 2; 3], [5; 6]) /\
  block_bytes 5 = 4%nat.
Proof. vm_compute. auto. Qed.

(** [n = 16]: q4 = [0..7], q3 = [7, 6, ..., 0]: 7 bytes. *)
Example pack_group_example_16 :
  pack_group [0; 1; 2; 3; 4; 5; 6; 7] [7; 6; 5; 4; 3; 2; 1; 0]
  = [16; 50; 84; 118; 27; 27; 15] /\
  unpack_group 16 [16; 50; 84; 118; 27; 27; 15]
  = ([0; 1; 2; 3; 4; 5; 6; 7], [7; 6; 5; 4; 3; 2; 1; 0]).
Proof. vm_compute. auto. Qed.
