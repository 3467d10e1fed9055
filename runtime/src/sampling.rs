//! Choosing the next token from logits: greedy, or sampled with temperature,
//! top-k and top-p, from a seeded generator so that a run can be repeated.
//!
//! The filters apply in Hugging Face's order: temperature scales the logits,
//! top-k keeps the k most likely tokens, top-p keeps the smallest set of
//! those whose probability reaches p, and one token is drawn from what is
//! left. Probabilities are computed in f64 so that the cut-offs do not depend
//! on summation order.

/// What can go wrong when choosing a token.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SamplingError {
    #[error("no logits to sample from")]
    Empty,
    #[error("logit {index} is {value}; logits must be finite or -inf")]
    NonFinite { index: usize, value: f32 },
    #[error("every logit is -inf")]
    NoCandidate,
    #[error("{0}")]
    BadParams(String),
}

/// How to choose tokens. `Default` is greedy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    /// Divides the logits; 0 means greedy.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens; 0 keeps all.
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability sum
    /// reaches `top_p`; 1 keeps all.
    pub top_p: f32,
    /// Seed of the generator; the same seed and logits give the same tokens.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
    }
}

impl SamplingParams {
    pub fn validate(&self) -> Result<(), SamplingError> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(SamplingError::BadParams(format!(
                "temperature {} must be a finite number >= 0",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(SamplingError::BadParams(format!(
                "top_p {} must be in (0, 1]",
                self.top_p
            )));
        }
        Ok(())
    }
}

/// The index of the largest logit; ties go to the lowest id.
pub fn greedy(logits: &[f32]) -> Result<u32, SamplingError> {
    check_logits(logits)?;
    let mut best: Option<(usize, f32)> = None;
    for (i, &x) in logits.iter().enumerate() {
        if x > f32::NEG_INFINITY && best.is_none_or(|(_, b)| x > b) {
            best = Some((i, x));
        }
    }
    best.map(|(i, _)| i as u32)
        .ok_or(SamplingError::NoCandidate)
}

/// NaN and +inf cannot be ranked or normalized; -inf is a masked token.
fn check_logits(logits: &[f32]) -> Result<(), SamplingError> {
    if logits.is_empty() {
        return Err(SamplingError::Empty);
    }
    match logits
        .iter()
        .position(|x| x.is_nan() || *x == f32::INFINITY)
    {
        Some(index) => Err(SamplingError::NonFinite {
            index,
            value: logits[index],
        }),
        None => Ok(()),
    }
}

/// Chooses tokens according to [`SamplingParams`], keeping its generator's
/// state between calls.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Result<Self, SamplingError> {
        params.validate()?;
        Ok(Self {
            params,
            rng: Rng::new(params.seed),
        })
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// The next token for one row of logits.
    pub fn sample(&mut self, logits: &[f32]) -> Result<u32, SamplingError> {
        if self.params.temperature == 0.0 {
            return greedy(logits);
        }
        let candidates = self.candidates(logits)?;
        // Inverse-CDF draw over the kept, unnormalized probabilities.
        let total: f64 = candidates.iter().map(|c| c.1).sum();
        let mut u = self.rng.next_f64() * total;
        for &(id, p) in &candidates {
            if u < p {
                return Ok(id);
            }
            u -= p;
        }
        // Rounding left `u` just above the last bucket.
        Ok(candidates.last().map_or(0, |c| c.0))
    }

    /// Tokens still eligible after temperature, top-k and top-p, most likely
    /// first (ties: lowest id first), with unnormalized probabilities.
    fn candidates(&self, logits: &[f32]) -> Result<Vec<(u32, f64)>, SamplingError> {
        check_logits(logits)?;
        let mut ranked: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, &x)| x > f32::NEG_INFINITY)
            .map(|(i, &x)| (i as u32, x))
            .collect();
        if ranked.is_empty() {
            return Err(SamplingError::NoCandidate);
        }
        let by_rank = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        let k = self.params.top_k;
        if k > 0 && k < ranked.len() {
            ranked.select_nth_unstable_by(k - 1, by_rank);
            ranked.truncate(k);
        }
        ranked.sort_unstable_by(by_rank);

        let max = f64::from(ranked[0].1);
        let t = f64::from(self.params.temperature);
        let mut probs: Vec<(u32, f64)> = ranked
            .iter()
            .map(|&(id, x)| (id, ((f64::from(x) - max) / t).exp()))
            .collect();
        if self.params.top_p < 1.0 {
            let total: f64 = probs.iter().map(|c| c.1).sum();
            let target = f64::from(self.params.top_p) * total;
            let mut sum = 0.0;
            let keep = probs
                .iter()
                .position(|c| {
                    sum += c.1;
                    sum >= target
                })
                .map_or(probs.len(), |i| i + 1);
            probs.truncate(keep);
        }
        Ok(probs)
    }
}

/// xoshiro256** seeded through splitmix64: small, fast, and the same stream
/// on every platform, which is all a sampler needs (not cryptographic).
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        // splitmix64 spreads any seed (0 included) over the whole state.
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Self {
            s: [next(), next(), next(), next()],
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1), from the top 53 bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler(temperature: f32, top_k: usize, top_p: f32, seed: u64) -> Sampler {
        Sampler::new(SamplingParams {
            temperature,
            top_k,
            top_p,
            seed,
        })
        .unwrap()
    }

    const LOGITS: [f32; 6] = [0.5, 2.0, -1.0, 1.9, f32::NEG_INFINITY, 0.0];

    #[test]
    fn greedy_takes_the_largest_and_lowest_id_on_ties() {
        assert_eq!(greedy(&LOGITS), Ok(1));
        assert_eq!(greedy(&[1.0, 3.0, 3.0, 2.0]), Ok(1));
        assert_eq!(
            greedy(&[f32::NEG_INFINITY; 3]),
            Err(SamplingError::NoCandidate)
        );
        assert_eq!(greedy(&[]), Err(SamplingError::Empty));
        assert_eq!(
            greedy(&[0.0, f32::NAN]).unwrap_err().to_string(),
            "logit 1 is NaN; logits must be finite or -inf"
        );
    }

    #[test]
    fn top_k_one_and_tiny_temperature_are_greedy() {
        let mut k1 = sampler(1.0, 1, 1.0, 7);
        let mut cold = sampler(1e-4, 0, 1.0, 7);
        for _ in 0..200 {
            assert_eq!(k1.sample(&LOGITS), Ok(1));
            assert_eq!(cold.sample(&LOGITS), Ok(1));
        }
        assert_eq!(sampler(0.0, 0, 1.0, 7).sample(&LOGITS), Ok(1));
    }

    #[test]
    fn top_p_keeps_the_smallest_prefix_reaching_p() {
        // Probabilities 0.5, 0.25, 0.125, 0.125 (logits are log2 steps).
        let ln2 = std::f32::consts::LN_2;
        let logits = [-2.0 * ln2, 0.0, -ln2, -2.0 * ln2];
        let ids = |p: f32| -> Vec<u32> {
            let s = sampler(1.0, 0, p, 0);
            s.candidates(&logits).unwrap().iter().map(|c| c.0).collect()
        };
        assert_eq!(ids(0.45), [1]);
        assert_eq!(ids(0.55), [1, 2]);
        assert_eq!(ids(0.74), [1, 2]);
        // The two 0.125 tokens tie; the lower id ranks first.
        assert_eq!(ids(0.76), [1, 2, 0]);
        assert_eq!(ids(0.9), [1, 2, 0, 3]);
        assert_eq!(ids(1.0), [1, 2, 0, 3]);
    }

    #[test]
    fn top_k_keeps_the_k_best() {
        let s = sampler(1.0, 3, 1.0, 0);
        let ids: Vec<u32> = s.candidates(&LOGITS).unwrap().iter().map(|c| c.0).collect();
        assert_eq!(ids, [1, 3, 0]);
    }

    #[test]
    fn samples_follow_the_distribution() {
        let logits = [0.0f32, 1.0, 2.0, f32::NEG_INFINITY];
        let z: f64 = logits.iter().map(|&x| f64::from(x).exp()).sum();
        let mut s = sampler(1.0, 0, 1.0, 42);
        let n = 100_000;
        let mut counts = [0usize; 4];
        for _ in 0..n {
            counts[s.sample(&logits).unwrap() as usize] += 1;
        }
        assert_eq!(counts[3], 0);
        for (i, &c) in counts.iter().enumerate().take(3) {
            let expected = f64::from(logits[i]).exp() / z;
            let observed = c as f64 / n as f64;
            assert!(
                (observed - expected).abs() < 0.01,
                "token {i}: {observed} vs {expected}"
            );
        }
    }

    #[test]
    fn same_seed_same_tokens() {
        let run = |seed| {
            let mut s = sampler(0.8, 4, 0.95, seed);
            (0..50)
                .map(|_| s.sample(&LOGITS).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
    }

    #[test]
    fn rng_is_xoshiro256starstar() {
        // State {1, 2, 3, 4} gives 11520, 0, 1509978240 in the reference C code.
        let mut r = Rng { s: [1, 2, 3, 4] };
        assert_eq!(
            [r.next_u64(), r.next_u64(), r.next_u64()],
            [11520, 0, 1509978240]
        );
        let mut r = Rng::new(1);
        assert!((0..1000)
            .map(|_| r.next_f64())
            .all(|x| (0.0..1.0).contains(&x)));
    }

    #[test]
    fn bad_params_are_rejected() {
        let err = |t, p| {
            Sampler::new(SamplingParams {
                temperature: t,
                top_p: p,
                ..Default::default()
            })
            .unwrap_err()
            .to_string()
        };
        assert!(err(-1.0, 1.0).contains("temperature -1"));
        assert!(err(1.0, 0.0).contains("top_p 0"));
    }
}
