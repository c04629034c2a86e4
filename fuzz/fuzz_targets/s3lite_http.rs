#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gzship_fuzz::s3lite_http(data));
