(** * Finite sums [f 0 + f 1 + ... + f (n-1)], accumulated left to right.

    One definition for every type with an addition, so that the same lemmas serve
    integer sums ([sumZ]), real sums ([sumR]) and list concatenation. *)

From Coq Require Import ZArith Reals Lia List.
Import ListNotations.

(** [let mut acc = zero; for i in 0..n { acc = add(acc, f(i)); } acc] *)
Fixpoint sum {A : Type} (add : A -> A -> A) (zero : A) (f : nat -> A) (n : nat) : A :=
  match n with
  | O => zero
  | S n' => add (sum add zero f n') (f n')
  end.

Definition sumZ : (nat -> Z) -> nat -> Z := sum Z.add 0%Z.
Definition sumR : (nat -> R) -> nat -> R := sum Rplus 0%R.

Lemma sum_ext : forall {A} (add : A -> A -> A) zero f g n,
  (forall i, (i < n)%nat -> f i = g i) -> sum add zero f n = sum add zero g n.
Proof.
  intros A add zero f g n H. induction n as [|n IH]; simpl.
  - reflexivity.
  - rewrite IH by (intros; apply H; lia). rewrite H by lia. reflexivity.
Qed.

(** Splitting a sum at [a]; needs an associative addition with a right identity. *)
Lemma sum_split : forall {A} (add : A -> A -> A) zero f a b,
  (forall x y z, add x (add y z) = add (add x y) z) ->
  (forall x, add x zero = x) ->
  sum add zero f (a + b) = add (sum add zero f a) (sum add zero (fun i => f (a + i)%nat) b).
Proof.
  intros A add zero f a b Hassoc Hzero. induction b as [|b IH].
  - rewrite Nat.add_0_r. simpl. rewrite Hzero. reflexivity.
  - rewrite Nat.add_succ_r. simpl. rewrite IH, Hassoc. reflexivity.
Qed.

Lemma Zadd_assoc' : forall x y z : Z, (x + (y + z) = x + y + z)%Z.
Proof. intros. ring. Qed.
Lemma Zadd_0' : forall x : Z, (x + 0 = x)%Z.
Proof. intros. ring. Qed.
Lemma Radd_assoc' : forall x y z : R, (x + (y + z) = x + y + z)%R.
Proof. intros. ring. Qed.
Lemma Radd_0' : forall x : R, (x + 0 = x)%R.
Proof. intros. ring. Qed.
Lemma app_assoc' : forall {B} (x y z : list B), x ++ (y ++ z) = (x ++ y) ++ z.
Proof. intros. apply app_assoc. Qed.
Lemma app_nil' : forall {B} (x : list B), x ++ [] = x.
Proof. intros. apply app_nil_r. Qed.

(** [seq a n] and [concat (map h (seq 0 n))] are sums in the list monoid. *)
Lemma seq_as_sum : forall a n, seq a n = sum (@app nat) [] (fun i => [a + i]%nat) n.
Proof.
  intros a n. induction n as [|n IH].
  - reflexivity.
  - rewrite seq_S, IH. reflexivity.
Qed.

Lemma concat_map_seq_as_sum : forall {B} (h : nat -> list B) n,
  concat (map h (seq 0 n)) = sum (@app B) [] h n.
Proof.
  intros B h n. induction n as [|n IH].
  - reflexivity.
  - rewrite seq_S, map_app, concat_app, IH. simpl. rewrite app_nil_r. reflexivity.
Qed.
