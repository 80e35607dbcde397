//! Profile documents (YAML, strict schema).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(p) = imager::profile::Profile::from_yaml(text, "fuzz") {
            let mut p = p;
            imager::profile::defaults::fill(&mut p, &Default::default());
            if imager::profile::validate::validate(&p).is_ok() {
                let _ = imager::plan::Plan::new(&p, 0);
            }
        }
    }
});
