//! The driver's message decoder: transfer payload bytes -> sections -> request, reply, notification.
#![no_main]

use driver::wire::{decode_notification, decode_reply, decode_request, IncomingMessage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = IncomingMessage::decode_sections(data) {
        let _ = decode_request(&msg);
        let _ = decode_reply(&msg);
        let _ = decode_notification(&msg);
        let _ = msg.is_heartbeat();
    }
});
