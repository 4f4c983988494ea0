//! A `tls_client_auth` subject (RFC 8705 §2.1.2) as registered (`TlsSubject::parse`: the
//! RFC 4514 subject DN parser, and the SAN kinds), and matched against a client certificate
//! (`subject_matches`, which parses the certificate's DER with x509-parser and compares DN or
//! SANs).
//!
//! Input: the registered value on the first line; the rest, if any, is the certificate's DER
//! (else the fixed client certificate is presented).
#![no_main]

use latchkey_fuzz::{CLIENT_CERTIFICATE, explain};
use latchkey_server::model::TlsSubject;
use latchkey_server::protocol::mutual_tls::subject_matches;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let (value, der) = match input.iter().position(|&b| b == b'\n') {
        Some(end) => (&input[..end], &input[end + 1..]),
        None => (input, &[][..]),
    };
    let Ok(value) = std::str::from_utf8(value) else {
        return;
    };
    let der = if der.is_empty() {
        CLIENT_CERTIFICATE
    } else {
        der
    };
    for kind in TlsSubject::KINDS {
        let subject = TlsSubject::parse(kind, value);
        explain(&subject);
        if let Ok(subject) = subject {
            assert_eq!(subject.kind(), kind);
            // What is stored reads back as the same subject.
            assert_eq!(
                TlsSubject::parse(kind, &subject.value()).as_ref(),
                Ok(&subject)
            );
            explain(&subject_matches(&subject, der));
        }
    }
});
