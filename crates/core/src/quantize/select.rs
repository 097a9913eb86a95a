//! Which type each tensor gets: llama.cpp's presets (`llama_ftype`), its tensor order, and a
//! port of `llama_tensor_get_type` for the presets rllm can produce. The branches for the
//! IQ1/IQ2/IQ3 presets are left out: rllm refuses those presets (it has no quantizer for their
//! types).
//! Spec: llama.cpp `src/llama-quant.cpp`, `src/llama-model-loader.h` (`weight_name_comparer`).

use rllm_kernels::GgmlType;

use super::QuantizeParams;
use crate::error::{Error, Result};
use crate::gguf::{GgufFile, TensorInfo, Value};

/// A llama.cpp file type: a default tensor type plus the per-tensor rules of its mixture.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ftype {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2_K,
    Q2_K_S,
    Q3_K_S,
    Q3_K_M,
    Q3_K_L,
    Q4_K_S,
    Q4_K_M,
    Q5_K_S,
    Q5_K_M,
    Q6_K,
    IQ4_NL,
    IQ4_XS,
    TQ1_0,
    TQ2_0,
}

/// Preset names as llama-quantize spells them, with their file types. `COPY` is not here: it
/// is "no preset" (`QuantizeParams::ftype = None`).
pub const PRESETS: &[(&str, Ftype)] = &[
    ("Q4_0", Ftype::Q4_0),
    ("Q4_1", Ftype::Q4_1),
    ("Q5_0", Ftype::Q5_0),
    ("Q5_1", Ftype::Q5_1),
    ("TQ1_0", Ftype::TQ1_0),
    ("TQ2_0", Ftype::TQ2_0),
    ("Q2_K", Ftype::Q2_K),
    ("Q2_K_S", Ftype::Q2_K_S),
    ("Q3_K", Ftype::Q3_K_M),
    ("Q3_K_S", Ftype::Q3_K_S),
    ("Q3_K_M", Ftype::Q3_K_M),
    ("Q3_K_L", Ftype::Q3_K_L),
    ("IQ4_NL", Ftype::IQ4_NL),
    ("IQ4_XS", Ftype::IQ4_XS),
    ("Q4_K", Ftype::Q4_K_M),
    ("Q4_K_S", Ftype::Q4_K_S),
    ("Q4_K_M", Ftype::Q4_K_M),
    ("Q5_K", Ftype::Q5_K_M),
    ("Q5_K_S", Ftype::Q5_K_S),
    ("Q5_K_M", Ftype::Q5_K_M),
    ("Q6_K", Ftype::Q6_K),
    ("Q8_0", Ftype::Q8_0),
    ("F16", Ftype::F16),
    ("BF16", Ftype::BF16),
    ("F32", Ftype::F32),
];

/// llama-quantize presets that need types rllm cannot quantize to.
const UNSUPPORTED: &[&str] = &[
    "Q1_0",
    "Q2_0",
    "MXFP4_MOE",
    "IQ2_XXS",
    "IQ2_XS",
    "IQ2_S",
    "IQ2_M",
    "IQ1_S",
    "IQ1_M",
    "IQ3_XXS",
    "IQ3_S",
    "IQ3_M",
    "IQ3_XS",
];

impl Ftype {
    /// The preset called `name` (case-insensitive). Errors name the valid choices.
    pub fn from_name(name: &str) -> Result<Ftype> {
        if let Some((_, f)) = PRESETS.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
            return Ok(*f);
        }
        let names: Vec<&str> = PRESETS.iter().map(|(n, _)| *n).collect();
        if UNSUPPORTED.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            return Err(Error::InvalidArgument(format!(
                "quantization type '{name}' needs a quantizer rllm does not have \
                 (supported: {}, COPY)",
                names.join(", ")
            )));
        }
        Err(Error::InvalidArgument(format!(
            "unknown quantization type '{name}' (expected one of {}, COPY)",
            names.join(", ")
        )))
    }

    /// The `llama_ftype` id written to `general.file_type`.
    pub fn id(self) -> u32 {
        use Ftype::*;
        match self {
            F32 => 0,
            F16 => 1,
            Q4_0 => 2,
            Q4_1 => 3,
            Q8_0 => 7,
            Q5_0 => 8,
            Q5_1 => 9,
            Q2_K => 10,
            Q3_K_S => 11,
            Q3_K_M => 12,
            Q3_K_L => 13,
            Q4_K_S => 14,
            Q4_K_M => 15,
            Q5_K_S => 16,
            Q5_K_M => 17,
            Q6_K => 18,
            Q2_K_S => 21,
            IQ4_NL => 25,
            IQ4_XS => 30,
            BF16 => 32,
            TQ1_0 => 36,
            TQ2_0 => 37,
        }
    }

    /// The tensor type of the preset (`llama_ftype_get_default_type`).
    pub fn default_type(self) -> GgmlType {
        use Ftype::*;
        match self {
            F32 => GgmlType::F32,
            F16 => GgmlType::F16,
            BF16 => GgmlType::BF16,
            Q4_0 => GgmlType::Q4_0,
            Q4_1 => GgmlType::Q4_1,
            Q5_0 => GgmlType::Q5_0,
            Q5_1 => GgmlType::Q5_1,
            Q8_0 => GgmlType::Q8_0,
            Q2_K | Q2_K_S => GgmlType::Q2_K,
            Q3_K_S | Q3_K_M | Q3_K_L => GgmlType::Q3_K,
            Q4_K_S | Q4_K_M => GgmlType::Q4_K,
            Q5_K_S | Q5_K_M => GgmlType::Q5_K,
            Q6_K => GgmlType::Q6_K,
            IQ4_NL => GgmlType::IQ4_NL,
            IQ4_XS => GgmlType::IQ4_XS,
            TQ1_0 => GgmlType::TQ1_0,
            TQ2_0 => GgmlType::TQ2_0,
        }
    }
}

/// The file type of an input (for COPY): `general.file_type` if set, else the type most
/// tensors have, flagged as guessed (llama.cpp's `LLAMA_FTYPE_GUESSED`).
pub(super) fn input_ftype(f: &GgufFile) -> u32 {
    if let Ok(v) = f.metadata.u64("general.file_type") {
        return v as u32;
    }
    let mut counts: Vec<(GgmlType, usize)> = Vec::new();
    for t in &f.tensors {
        match counts.iter_mut().find(|(ty, _)| *ty == t.ty) {
            Some(c) => c.1 += 1,
            None => counts.push((t.ty, 1)),
        }
    }
    // ggml iterates types by id and keeps the first maximum.
    counts.sort_by_key(|(ty, _)| ty.id());
    let mut best = (GgmlType::F32, 0);
    for &(ty, n) in &counts {
        if n > best.1 {
            best = (ty, n);
        }
    }
    use GgmlType::*;
    let id = match best.0 {
        F16 => 1,
        BF16 => 32,
        Q4_0 => 2,
        Q4_1 => 3,
        Q5_0 => 8,
        Q5_1 => 9,
        Q8_0 => 7,
        Q2_K => 10,
        Q3_K => 12,
        Q4_K => 15,
        Q5_K => 17,
        Q6_K => 18,
        TQ1_0 => 36,
        TQ2_0 => 37,
        IQ2_XXS => 19,
        IQ2_XS => 20,
        IQ2_S => 28,
        IQ3_XXS => 23,
        IQ1_S => 24,
        IQ1_M => 31,
        IQ4_NL => 25,
        IQ4_XS => 30,
        IQ3_S => 26,
        _ => 0,
    };
    id | 1024
}

/// The layer of `blk.N.…` (C's `sscanf(name, "blk.%d.")`), or −1.
fn layer_of(name: &str) -> i64 {
    let Some(rest) = name.strip_prefix("blk.") else {
        return -1;
    };
    let rest = rest.trim_start();
    let (sign, digits) = match rest.strip_prefix('-') {
        Some(r) => (-1, r),
        None => (1, rest.strip_prefix('+').unwrap_or(rest)),
    };
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse::<i64>().map(|v| sign * v).unwrap_or(-1)
}

/// Tensor indices in llama.cpp's order (its weights map): by layer (non-layer tensors first),
/// then by name.
pub(super) fn llama_order(f: &GgufFile) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..f.tensors.len()).collect();
    idx.sort_by(|&a, &b| {
        let (na, nb) = (&f.tensors[a].name, &f.tensors[b].name);
        (layer_of(na), na.as_bytes()).cmp(&(layer_of(nb), nb.as_bytes()))
    });
    idx
}

/// The hyper-parameters the rules look at.
pub(super) struct ModelInfo {
    arch: String,
    n_layer: i64,
    n_gqa: i64,
    n_expert: i64,
    is_70b: bool,
}

/// First value of an integer key that may be per-layer array.
fn first_int(f: &GgufFile, key: &str) -> Option<i64> {
    match f.metadata.get(key)? {
        Value::Array(a) => a.get(0).and_then(|v| v.as_i128()).map(|v| v as i64),
        v => v.as_i128().map(|v| v as i64),
    }
}

impl ModelInfo {
    pub(super) fn from_file(f: &GgufFile) -> Result<Self> {
        let arch = f
            .metadata
            .str("general.architecture")
            .map_err(|k| f.error(k))?
            .to_owned();
        let n_layer = first_int(f, &format!("{arch}.block_count")).unwrap_or(0);
        let n_head = first_int(f, &format!("{arch}.attention.head_count")).unwrap_or(0);
        let n_head_kv = first_int(f, &format!("{arch}.attention.head_count_kv")).unwrap_or(n_head);
        let n_expert = first_int(f, &format!("{arch}.expert_count")).unwrap_or(0);
        Ok(ModelInfo {
            n_gqa: if n_head_kv > 0 { n_head / n_head_kv } else { 0 },
            is_70b: arch == "llama" && n_layer == 80 && n_head != n_head_kv,
            arch,
            n_layer,
            n_expert,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Category {
    TokenEmbd,
    AttnQ,
    AttnV,
    AttnK,
    AttnQkv,
    AttnKvB,
    AttnOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Output,
    Other,
}

fn category(name: &str) -> Category {
    use Category::*;
    if name == "output.weight" {
        return Output;
    }
    if name == "token_embd.weight" || name == "per_layer_token_embd.weight" {
        return TokenEmbd;
    }
    for (pat, cat) in [
        ("attn_qkv.weight", AttnQkv),
        ("attn_kv_b.weight", AttnKvB),
        ("attn_v.weight", AttnV),
        ("attn_k.weight", AttnK),
        ("attn_q.weight", AttnQ),
        ("attn_output.weight", AttnOutput),
        ("ffn_up", FfnUp),
        ("ffn_gate", FfnGate),
        ("ffn_down", FfnDown),
    ] {
        if name.contains(pat) {
            return cat;
        }
    }
    Other
}

fn is_attn_v(c: Category) -> bool {
    matches!(c, Category::AttnV | Category::AttnQkv | Category::AttnKvB)
}

fn use_more_bits(i: i64, n: i64) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// Number of dimensions as ggml counts them (trailing 1s dropped).
fn n_dims(t: &TensorInfo) -> usize {
    let mut n = t.dims.len();
    while n > 1 && t.dims[n - 1] == 1 {
        n -= 1;
    }
    n.max(1)
}

/// ggml's `tensor_allows_quantization` for the names that occur in llama-like models.
fn allows_quantization(p: &QuantizeParams, t: &TensorInfo) -> bool {
    if p.ftype.is_none() || n_dims(t) < 2 {
        return false;
    }
    let name = t.name.as_str();
    let excluded = [
        "_norm.weight",
        "ffn_gate_inp.weight",
        "ffn_gate_tid2eid.weight",
        "altup",
        "laurel",
        "per_layer_model_proj",
        "ssm_conv1d",
        "shortconv.conv.weight",
        "indexer.k_proj.weight",
        "indexer.q_proj.weight",
        "time_mix_first.weight",
        "time_mix_w0.weight",
        "time_mix_w1.weight",
        "time_mix_w2.weight",
        "time_mix_v0.weight",
        "time_mix_v1.weight",
        "time_mix_v2.weight",
        "time_mix_a0.weight",
        "time_mix_a1.weight",
        "time_mix_a2.weight",
        "time_mix_g1.weight",
        "time_mix_g2.weight",
        "time_mix_decay_w1.weight",
        "time_mix_decay_w2.weight",
        "time_mix_lerp_fused.weight",
        "attn_rel_b.weight",
        ".position_embd",
        "sam.pos_embd",
        "sam.neck.",
        "sam.net_",
        ".rel_pos",
        ".patch_embd",
        ".patch_merger",
        "a.rvq.codebook",
        "mm.a.code_embd",
    ];
    name.ends_with("weight")
        && !excluded.iter().any(|e| name.contains(e))
        && (!p.leave_output_tensor || name != "output.weight")
        && name != "position_embd.weight"
        && name != "token_types.weight"
}

/// The stateful type chooser: like llama.cpp it counts attention-v and ffn tensors in order,
/// so tensors must be visited in [`llama_order`].
pub(super) struct Selector<'a> {
    info: &'a ModelInfo,
    params: &'a QuantizeParams,
    tied: bool,
    n_attention_wv: i64,
    i_attention_wv: i64,
    i_ffn_down: i64,
    i_ffn_gate: i64,
    i_ffn_up: i64,
}

impl<'a> Selector<'a> {
    pub(super) fn new(
        info: &'a ModelInfo,
        params: &'a QuantizeParams,
        order: &[usize],
        f: &GgufFile,
    ) -> Self {
        let names = order.iter().map(|&i| f.tensors[i].name.as_str());
        let cats: Vec<Category> = names.map(category).collect();
        Selector {
            info,
            params,
            tied: !cats.contains(&Category::Output),
            n_attention_wv: cats.iter().filter(|&&c| is_attn_v(c)).count() as i64,
            i_attention_wv: 0,
            i_ffn_down: 0,
            i_ffn_gate: 0,
            i_ffn_up: 0,
        }
    }

    /// The layer of an ffn tensor for the `use_more_bits` rules: the running count, or the
    /// name's layer for MoE models (whose experts are not in layer order).
    fn layer_info(&self, i: i64, name: &str) -> Result<(i64, i64)> {
        let n = self.info.n_layer;
        if self.info.n_expert > 1 {
            let l = layer_of(name);
            if l < 0 || l >= n {
                return Err(Error::InvalidArgument(format!(
                    "cannot determine the layer of tensor {name} (must be in [0, {n}))"
                )));
            }
            return Ok((l, n));
        }
        Ok((i, n))
    }

    /// The type for `t` and, when the row length forced a change, the type the rules chose.
    pub(super) fn target_type(&mut self, t: &TensorInfo) -> Result<(GgmlType, Option<GgmlType>)> {
        let p = self.params;
        if !allows_quantization(p, t) {
            return Ok((t.ty, None));
        }
        let cat = category(&t.name);
        if let (Some(ty), Category::TokenEmbd) = (p.token_embedding_type, cat) {
            return Ok((ty, None));
        }
        if let (Some(ty), Category::Output) = (p.output_tensor_type, cat) {
            return Ok((ty, None));
        }
        let ftype = p.ftype.expect("allows_quantization checked the preset");
        let default = ftype.default_type();
        if !default.is_quantized() {
            return Ok((default, None));
        }
        let chosen = if p.pure {
            default
        } else {
            self.rules(default, t, ftype, cat)?
        };
        let ne0 = t.dims.first().copied().unwrap_or(1);
        Ok(match fallback(ne0, chosen) {
            Some(f) => (f, Some(chosen)),
            None => (chosen, None),
        })
    }

    /// `llama_tensor_get_type_impl` for the supported presets.
    fn rules(
        &mut self,
        mut new: GgmlType,
        t: &TensorInfo,
        ftype: Ftype,
        cat: Category,
    ) -> Result<GgmlType> {
        use Ftype as F;
        use GgmlType as G;
        let info = self.info;
        let falcon = info.arch == "falcon";
        let has_imatrix = self.params.imatrix.is_some();
        if cat == Category::Output || (self.tied && cat == Category::TokenEmbd) {
            if let Some(ty) = self.params.output_tensor_type {
                new = ty;
            } else {
                let nx = t.dims.first().copied().unwrap_or(1);
                if falcon || nx % new.block_size() as u64 != 0 {
                    new = G::Q8_0;
                } else if new != G::Q8_0 {
                    new = G::Q6_K;
                }
            }
        } else if cat == Category::TokenEmbd {
            if let Some(ty) = self.params.token_embedding_type {
                new = ty;
            } else if matches!(ftype, F::TQ1_0 | F::TQ2_0) {
                new = G::Q4_K;
            }
        } else if is_attn_v(cat) {
            let (i, n) = (self.i_attention_wv, self.n_attention_wv);
            if ftype == F::Q2_K {
                new = if info.n_gqa >= 4 { G::Q4_K } else { G::Q3_K };
            } else if ftype == F::Q2_K_S && info.n_gqa >= 4 {
                new = G::Q4_K;
            } else if ftype == F::Q3_K_M {
                new = if i < 2 { G::Q5_K } else { G::Q4_K };
            } else if ftype == F::Q3_K_L
                || (matches!(ftype, F::IQ4_NL | F::IQ4_XS) && info.n_gqa >= 4)
            {
                new = G::Q5_K;
            } else if matches!(ftype, F::Q4_K_M | F::Q5_K_M) && use_more_bits(i, n) {
                new = G::Q6_K;
            } else if ftype == F::Q4_K_S && i < 4 {
                new = G::Q5_K;
            }
            if info.is_70b && matches!(new, G::Q3_K | G::Q4_K) {
                new = G::Q5_K;
            }
            if info.n_expert == 8 {
                new = G::Q8_0;
            }
            self.i_attention_wv += 1;
        } else if cat == Category::AttnK {
            if info.n_expert == 8 {
                new = G::Q8_0;
            }
        } else if cat == Category::FfnDown {
            let (i, n) = self.layer_info(self.i_ffn_down, &t.name)?;
            if ftype == F::Q2_K {
                new = G::Q3_K;
            } else if ftype == F::Q2_K_S {
                if i < n / 8 {
                    new = G::Q4_K;
                }
            } else if ftype == F::Q3_K_M {
                new = if i < n / 16 {
                    G::Q5_K
                } else if !falcon || use_more_bits(i, n) {
                    G::Q4_K
                } else {
                    G::Q3_K
                };
            } else if ftype == F::Q3_K_L {
                new = if falcon { G::Q4_K } else { G::Q5_K };
            } else if ftype == F::Q4_K_M {
                if falcon {
                    new = if i < n / 16 {
                        G::Q6_K
                    } else if use_more_bits(i, n) {
                        G::Q5_K
                    } else {
                        G::Q4_K
                    };
                } else if use_more_bits(i, n) {
                    new = G::Q6_K;
                }
            } else if i < n / 8 && matches!(ftype, F::IQ4_NL | F::IQ4_XS) && !has_imatrix {
                new = G::Q5_K;
            } else if ftype == F::Q5_K_M && use_more_bits(i, n) {
                new = G::Q6_K;
            } else if ftype == F::Q4_K_S && !falcon && i < n / 8 {
                new = G::Q5_K;
            } else if matches!(ftype, F::Q4_0 | F::Q5_0) && has_imatrix && i < n / 8 {
                new = if ftype == F::Q4_0 { G::Q4_1 } else { G::Q5_1 };
            }
            self.i_ffn_down += 1;
        } else if cat == Category::AttnOutput {
            if !falcon {
                if info.n_expert == 8 {
                    if matches!(
                        ftype,
                        F::Q2_K
                            | F::Q3_K_S
                            | F::Q3_K_M
                            | F::IQ4_NL
                            | F::Q4_K_S
                            | F::Q4_K_M
                            | F::IQ4_XS
                    ) {
                        new = G::Q5_K;
                    }
                } else if ftype == F::Q2_K {
                    new = G::Q3_K;
                } else if ftype == F::Q3_K_M {
                    new = G::Q4_K;
                } else if ftype == F::Q3_K_L {
                    new = G::Q5_K;
                }
            } else if ftype == F::Q3_K_L {
                new = G::Q4_K;
            }
        } else if cat == Category::AttnQkv {
            if matches!(ftype, F::Q3_K_M | F::Q3_K_L) {
                new = G::Q4_K;
            } else if ftype == F::Q4_K_M {
                new = G::Q5_K;
            } else if ftype == F::Q5_K_M {
                new = G::Q6_K;
            }
        } else if cat == Category::FfnGate {
            self.layer_info(self.i_ffn_gate, &t.name)?;
            self.i_ffn_gate += 1;
        } else if cat == Category::FfnUp {
            self.layer_info(self.i_ffn_up, &t.name)?;
            self.i_ffn_up += 1;
        }
        Ok(new)
    }

    /// Q2_K tensors of a Q2_K_S file need an importance matrix (`tensor_requires_imatrix`).
    pub(super) fn check_imatrix(&self, t: &TensorInfo, new: GgmlType) -> Result<()> {
        let embd_or_out = matches!(category(&t.name), Category::TokenEmbd | Category::Output);
        let needs = new == GgmlType::Q2_K && self.params.ftype == Some(Ftype::Q2_K_S);
        let has = self
            .params
            .imatrix
            .as_ref()
            .is_some_and(|m| m.entries.contains_key(&t.name));
        if needs && !embd_or_out && !has {
            return Err(Error::InvalidArgument(format!(
                "tensor '{}': Q2_K_S requires an importance matrix (--imatrix)",
                t.name
            )));
        }
        Ok(())
    }
}

/// The type that replaces `target` when rows of `ne0` are not whole blocks of it (`None`: no
/// change). llama.cpp's `tensor_type_fallback`.
fn fallback(ne0: u64, target: GgmlType) -> Option<GgmlType> {
    use GgmlType::*;
    let block = target.block_size() as u64;
    if ne0 % block == 0 {
        return None;
    }
    let f = match target {
        IQ1_S | IQ1_M | IQ2_XXS | IQ2_XS | IQ2_S | IQ3_XXS | IQ3_S | IQ4_XS => IQ4_NL,
        Q2_K | Q3_K | TQ1_0 | TQ2_0 => Q4_0,
        Q4_K => Q5_0,
        Q5_K => Q5_1,
        Q6_K => Q8_0,
        other => other,
    };
    Some(if ne0 % f.block_size() as u64 != 0 {
        F16
    } else {
        f
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_parsing_follows_sscanf() {
        assert_eq!(layer_of("blk.12.attn_q.weight"), 12);
        assert_eq!(layer_of("output.weight"), -1);
        assert_eq!(layer_of("blk.x.y"), -1);
    }

    #[test]
    fn more_bits_layers() {
        // 30 layers: first 3, last 4, and every third in between.
        let picked: Vec<i64> = (0..30).filter(|&i| use_more_bits(i, 30)).collect();
        assert_eq!(picked, [0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29]);
    }

    #[test]
    fn fallbacks() {
        assert_eq!(fallback(576, GgmlType::Q4_K), Some(GgmlType::Q5_0));
        assert_eq!(fallback(576, GgmlType::Q6_K), Some(GgmlType::Q8_0));
        assert_eq!(fallback(1536, GgmlType::Q6_K), None);
        assert_eq!(fallback(40, GgmlType::Q4_K), Some(GgmlType::F16));
        assert_eq!(fallback(40, GgmlType::Q8_0), Some(GgmlType::F16));
    }

    #[test]
    fn preset_names() {
        assert_eq!(Ftype::from_name("q4_k_m").unwrap(), Ftype::Q4_K_M);
        assert_eq!(Ftype::from_name("Q4_K").unwrap(), Ftype::Q4_K_M);
        let e = Ftype::from_name("Q9_X").unwrap_err().to_string();
        assert!(e.contains("unknown quantization type 'Q9_X'"), "{e}");
        let e = Ftype::from_name("IQ2_XXS").unwrap_err().to_string();
        assert!(e.contains("rllm does not have"), "{e}");
    }
}
