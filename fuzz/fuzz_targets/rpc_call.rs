//! Fuzzes the RPC call-header decoder: any bytes must decode or fail cleanly, and a decoded
//! header's argument offset must lie inside the message.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = oncrpc::message::decode_call(data) {
        assert!(h.args_offset <= data.len());
    }
});
