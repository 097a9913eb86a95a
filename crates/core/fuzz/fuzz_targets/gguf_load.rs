//! Any bytes as a GGUF file: opening it, reading every tensor's data and binding a model must
//! return `Ok` or a typed error, never panic, abort or hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rllm_core::gguf::GgufFile;
use rllm_core::model::Model;
use std::io::Write;

fuzz_target!(|data: &[u8]| {
    // The reader maps files, so each input goes through a real (per-process) file.
    let path = std::env::temp_dir().join(format!("rllm-fuzz-{}.gguf", std::process::id()));
    let mut f = std::fs::File::create(&path).expect("temp file");
    f.write_all(data).expect("write temp file");
    drop(f);
    if let Ok(file) = GgufFile::open(&path) {
        let mut sum = 0u64;
        for t in &file.tensors {
            sum = sum.wrapping_add(file.tensor_data(t).iter().map(|&b| b as u64).sum::<u64>());
            let _ = t.rows_cols();
        }
        std::hint::black_box(sum);
        let _ = Model::load(&path);
    }
});
