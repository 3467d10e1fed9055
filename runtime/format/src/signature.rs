//! Kernel signatures: what each compiled kernel was built for, recorded in
//! the code object itself (an exported symbol of the CPU shared object, a
//! comment line of the PTX module), so that the runtime checks the
//! manifest's plan against the code and not only against itself.
//!
//! A kernel is compiled for fixed buffer types (element, width, role), a
//! fixed workgroup geometry, the artifact's context length (the KV cache
//! rows are static in the kernels) and its largest chunk of tokens. A
//! manifest whose dispatch binds another buffer type, another workgroup
//! count or another kernel than the code declares would make a kernel read
//! or write out of bounds; [`CodeSignatures::check`] refuses it before any
//! memory is allocated or any kernel runs.

use crate::artifact::{BufferSpec, DispatchSpec, Manifest};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Name of the data symbol (CPU) and of the PTX comment that carry the
/// signatures as JSON.
pub const SIGNATURES_SYMBOL: &str = "q35_kernel_signatures";

/// The type of one buffer a kernel argument was compiled for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BufferType {
    pub element: String,
    pub width: usize,
    pub role: String,
}

impl BufferType {
    fn of(spec: &BufferSpec) -> Self {
        Self {
            element: spec.element.clone(),
            width: spec.width,
            role: spec.role.clone(),
        }
    }
}

impl std::fmt::Display for BufferType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} of width {}", self.role, self.element, self.width)
    }
}

/// One kernel's signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelSignature {
    pub workgroups: usize,
    pub workgroups_per_token: usize,
    pub buffers: Vec<BufferType>,
}

/// Every kernel of a code object, and the plan-wide sizes compiled into it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeSignatures {
    pub context_length: usize,
    pub max_tokens: usize,
    pub kernels: BTreeMap<String, KernelSignature>,
}

impl CodeSignatures {
    /// The signatures a plan implies (the compiler records these for the
    /// kernels it just generated); an error if two dispatches of one kernel
    /// disagree, which would be a compiler bug.
    pub fn of_plan(
        buffers: &[BufferSpec],
        dispatches: &[DispatchSpec],
        context_length: usize,
        max_tokens: usize,
    ) -> Result<Self, String> {
        let index: HashMap<&str, &BufferSpec> = buffers.iter().map(|b| (b.name.as_str(), b)).collect();
        let mut kernels = BTreeMap::new();
        for (i, d) in dispatches.iter().enumerate() {
            let signature = signature_of(i, d, &index)?;
            match kernels.get(&d.kernel) {
                None => {
                    kernels.insert(d.kernel.clone(), signature);
                }
                Some(first) if *first == signature => {}
                Some(_) => {
                    return Err(format!(
                        "dispatch {i} calls `{}` with other buffer types or workgroups than an earlier dispatch of it",
                        d.kernel
                    ))
                }
            }
        }
        Ok(Self {
            context_length,
            max_tokens,
            kernels,
        })
    }

    /// Checks `manifest`'s plan against these signatures: the sizes, and
    /// every dispatch's kernel, workgroups and buffer types. The message
    /// names the first disagreement.
    pub fn check(&self, manifest: &Manifest) -> Result<(), String> {
        if manifest.context_length != self.context_length {
            return Err(format!(
                "the manifest says context_length {}, the code was compiled for {}",
                manifest.context_length, self.context_length
            ));
        }
        if manifest.max_tokens != self.max_tokens {
            return Err(format!(
                "the manifest says max_tokens {}, the code was compiled for {}",
                manifest.max_tokens, self.max_tokens
            ));
        }
        let index: HashMap<&str, &BufferSpec> = manifest.buffers.iter().map(|b| (b.name.as_str(), b)).collect();
        for (i, d) in manifest.dispatches.iter().enumerate() {
            let declared = self.kernels.get(&d.kernel).ok_or_else(|| {
                format!(
                    "dispatch {i} calls {}, which the code object does not declare",
                    crate::quote::quote(&d.kernel)
                )
            })?;
            let found = signature_of(i, d, &index)?;
            let at = format!("dispatch {i} ({})", crate::quote::quote(&d.kernel));
            if (found.workgroups, found.workgroups_per_token) != (declared.workgroups, declared.workgroups_per_token) {
                return Err(format!(
                    "{at} has {} + {} per token workgroups, the kernel was compiled for {} + {} per token",
                    found.workgroups, found.workgroups_per_token, declared.workgroups, declared.workgroups_per_token
                ));
            }
            if found.buffers.len() != declared.buffers.len() {
                return Err(format!(
                    "{at} binds {} buffers, the kernel takes {}",
                    found.buffers.len(),
                    declared.buffers.len()
                ));
            }
            for (j, (f, e)) in found.buffers.iter().zip(&declared.buffers).enumerate() {
                if f != e {
                    return Err(format!(
                        "{at} binds {} ({f}) as argument {j}, the kernel was compiled for {e}",
                        crate::quote::quote(&d.buffers[j])
                    ));
                }
            }
        }
        Ok(())
    }

    /// The JSON the code object carries.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("signatures serialize")
    }

    /// Parses the code object's JSON.
    pub fn from_json(text: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(text).map_err(|e| format!("its kernel signatures are not valid: {e}"))
    }

    /// The comment line that carries the signatures in a PTX module.
    pub fn ptx_comment(&self) -> String {
        format!("// {SIGNATURES_SYMBOL}: {}\n", self.to_json())
    }

    /// The signatures of a PTX module (see [`Self::ptx_comment`]).
    pub fn from_ptx(ptx: &str) -> Result<Self, String> {
        let prefix = format!("// {SIGNATURES_SYMBOL}: ");
        let line = ptx
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .ok_or_else(|| "the PTX module declares no kernel signatures".to_string())?;
        Self::from_json(line.as_bytes())
    }
}

fn signature_of(i: usize, d: &DispatchSpec, index: &HashMap<&str, &BufferSpec>) -> Result<KernelSignature, String> {
    let buffers = d
        .buffers
        .iter()
        .map(|name| {
            index.get(name.as_str()).map(|spec| BufferType::of(spec)).ok_or_else(|| {
                format!(
                    "dispatch {i} ({}) uses buffer {}, which the plan does not declare",
                    crate::quote::quote(&d.kernel),
                    crate::quote::quote(name)
                )
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(KernelSignature {
        workgroups: d.workgroups,
        workgroups_per_token: d.workgroups_per_token,
        buffers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffer(name: &str, element: &str, width: usize, role: &str) -> BufferSpec {
        BufferSpec {
            name: name.into(),
            element: element.into(),
            width,
            role: role.into(),
        }
    }

    fn dispatch(kernel: &str, workgroups: usize, per_token: usize, buffers: &[&str]) -> DispatchSpec {
        DispatchSpec {
            kernel: kernel.into(),
            workgroups,
            workgroups_per_token: per_token,
            buffers: buffers.iter().map(|b| b.to_string()).collect(),
            concurrent: false,
        }
    }

    fn plan() -> (Vec<BufferSpec>, Vec<DispatchSpec>) {
        let buffers = vec![
            buffer("a", "f32", 64, "activation"),
            buffer("b", "f32", 64, "activation"),
            buffer("w", "f32", 64, "weight"),
            buffer("k", "f32", 4096, "kv_cache"),
        ];
        let dispatches = vec![
            dispatch("norm", 0, 1, &["a", "w", "b"]),
            dispatch("norm", 0, 1, &["b", "w", "a"]),
            dispatch("kv", 0, 1, &["a", "k"]),
        ];
        (buffers, dispatches)
    }

    fn manifest_of(buffers: Vec<BufferSpec>, dispatches: Vec<DispatchSpec>) -> Manifest {
        let mut m: Manifest = serde_json::from_str(
            r#"{"format":"q35-artifact","version":2,"target":{"kind":"cpu","triple":"","cpu":"","features":""},
            "model":{"architecture":"llama","vocab_size":8,"hidden_size":4,"intermediate_size":8,"num_hidden_layers":1,
            "num_attention_heads":1,"num_key_value_heads":1,"head_dim":4,"max_position_embeddings":16,"rms_norm_eps":1e-5,
            "rope_theta":10000.0,"tie_word_embeddings":true},
            "quant":"q35","group":"64","context_length":128,"max_tokens":64,"rows_per_workgroup":64,
            "buffers":[],"dispatches":[],"weights":[],"code":"code/cpu.so","tokenizer":null,"toolchain":{},"checksums":{}}"#,
        )
        .unwrap();
        m.buffers = buffers;
        m.dispatches = dispatches;
        m
    }

    #[test]
    fn a_plan_agrees_with_its_own_signatures() {
        let (buffers, dispatches) = plan();
        let signatures = CodeSignatures::of_plan(&buffers, &dispatches, 128, 64).unwrap();
        assert_eq!(signatures.kernels.len(), 2);
        signatures.check(&manifest_of(buffers, dispatches)).unwrap();
        let json = signatures.to_json();
        assert_eq!(CodeSignatures::from_json(json.as_bytes()).unwrap(), signatures);
        let ptx = format!(".version 8.0\n{}.target sm_80\n", signatures.ptx_comment());
        assert_eq!(CodeSignatures::from_ptx(&ptx).unwrap(), signatures);
    }

    #[test]
    fn edits_to_the_plan_are_named() {
        let (buffers, dispatches) = plan();
        let signatures = CodeSignatures::of_plan(&buffers, &dispatches, 128, 64).unwrap();
        let check = |edit: &dyn Fn(&mut Manifest)| {
            let mut m = manifest_of(buffers.clone(), dispatches.clone());
            edit(&mut m);
            signatures.check(&m).unwrap_err()
        };
        assert_eq!(
            check(&|m| m.dispatches[1].workgroups_per_token = 9),
            "dispatch 1 (`norm`) has 0 + 9 per token workgroups, the kernel was compiled for 0 + 1 per token"
        );
        assert_eq!(
            check(&|m| m.buffers[3].width = 2048),
            "dispatch 2 (`kv`) binds `k` (kv_cache f32 of width 2048) as argument 1, the kernel was compiled for kv_cache f32 of width 4096"
        );
        assert_eq!(
            check(&|m| m.context_length = 256),
            "the manifest says context_length 256, the code was compiled for 128"
        );
        assert_eq!(
            check(&|m| m.dispatches[2].kernel = "norm".into()),
            "dispatch 2 (`norm`) binds 2 buffers, the kernel takes 3"
        );
        assert_eq!(
            check(&|m| m.dispatches[0].kernel = "other".into()),
            "dispatch 0 calls `other`, which the code object does not declare"
        );
        assert_eq!(
            check(&|m| m.dispatches[0].buffers.swap(0, 1)),
            "dispatch 0 (`norm`) binds `w` (weight f32 of width 64) as argument 0, the kernel was compiled for activation f32 of width 64"
        );
        assert_eq!(check(&|m| m.dispatches[0].buffers.clear()), "dispatch 0 (`norm`) binds 0 buffers, the kernel takes 3");
    }

    #[test]
    fn disagreeing_dispatches_of_one_kernel_are_a_compiler_error() {
        let (buffers, mut dispatches) = plan();
        dispatches[1].buffers[2] = "k".into();
        let err = CodeSignatures::of_plan(&buffers, &dispatches, 128, 64).unwrap_err();
        assert!(err.contains("dispatch 1 calls `norm`"), "{err}");
    }
}
