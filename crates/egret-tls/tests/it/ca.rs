//! Certificate contents, checked with an independent parser (x509-parser).

use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

use egret_tls::{LeafName, SandboxCa, TlsError, LEAF_MAX_VALIDITY};

const DAY: Duration = Duration::from_secs(24 * 3600);

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn now() -> i64 {
    unix(SystemTime::now())
}

#[test]
fn ca_certificate_fields() {
    let ca = SandboxCa::generate("agent-47", DAY).unwrap();
    let (rest, cert) = X509Certificate::from_der(ca.cert_der()).unwrap();
    assert!(rest.is_empty());

    let cn = cert.subject().iter_common_name().next().unwrap();
    assert_eq!(cn.as_str().unwrap(), "egret sandbox CA (agent-47)");
    let o = cert.subject().iter_organization().next().unwrap();
    assert_eq!(o.as_str().unwrap(), "egret");
    assert_eq!(cert.subject(), cert.issuer());

    let bc = cert.basic_constraints().unwrap().unwrap();
    assert!(bc.critical);
    assert!(bc.value.ca);
    assert_eq!(bc.value.path_len_constraint, Some(0));

    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(ku.key_cert_sign() && ku.crl_sign() && ku.digital_signature());
    assert!(!ku.key_encipherment());

    // ECDSA P-256 with SHA-256.
    assert_eq!(
        cert.signature_algorithm.algorithm.to_id_string(),
        "1.2.840.10045.4.3.2"
    );
    assert!(cert.verify_signature(None).is_ok(), "self-signed signature");

    let nb = cert.validity().not_before.timestamp();
    let na = cert.validity().not_after.timestamp();
    assert!((now() - 3600 - nb).abs() <= 5, "notBefore is one hour back");
    assert!((na - (now() + DAY.as_secs() as i64)).abs() <= 5);
    assert_eq!(nb, unix(ca.not_before()));
    assert_eq!(na, unix(ca.not_after()));

    assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(ca.sandbox_id(), "agent-47");
}

#[test]
fn two_cas_never_share_serial_or_key() {
    let a = SandboxCa::generate("a", DAY).unwrap();
    let b = SandboxCa::generate("a", DAY).unwrap();
    let (_, ca) = X509Certificate::from_der(a.cert_der()).unwrap();
    let (_, cb) = X509Certificate::from_der(b.cert_der()).unwrap();
    assert_ne!(ca.raw_serial(), cb.raw_serial());
    assert!(ca.raw_serial().len() >= 15);
    assert_ne!(ca.public_key().raw, cb.public_key().raw);
    assert_ne!(a.key_pem_for_leak_tests(), b.key_pem_for_leak_tests());
}

#[test]
fn dns_leaf_fields() {
    let ca = SandboxCa::generate("agent-47", DAY).unwrap();
    let (_, ca_cert) = X509Certificate::from_der(ca.cert_der()).unwrap();
    let leaf = ca
        .issue_leaf(&LeafName::dns("API.Example.com.").unwrap())
        .unwrap();
    assert_eq!(leaf.cert.len(), 1, "chain is the leaf alone");
    let (_, cert) = X509Certificate::from_der(&leaf.cert[0]).unwrap();

    let san = cert.subject_alternative_name().unwrap().unwrap().value;
    assert_eq!(
        san.general_names,
        vec![GeneralName::DNSName("api.example.com")]
    );
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth);
    assert!(!eku.client_auth);
    assert!(!cert.is_ca());
    let bc = cert.basic_constraints().unwrap().unwrap().value;
    assert!(!bc.ca);
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && !ku.key_cert_sign());

    assert_eq!(cert.issuer(), ca_cert.subject());
    assert!(cert.verify_signature(Some(ca_cert.public_key())).is_ok());
    let aki = cert
        .iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(k) => k.key_identifier.as_ref().map(|k| k.0),
            _ => None,
        })
        .expect("leaf carries an authority key identifier");
    let ski = ca_cert
        .iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0),
            _ => None,
        })
        .expect("CA carries a subject key identifier");
    assert_eq!(aki, ski);

    let (nb, na) = (
        cert.validity().not_before.timestamp(),
        cert.validity().not_after.timestamp(),
    );
    assert!(nb >= ca_cert.validity().not_before.timestamp());
    assert!(na <= ca_cert.validity().not_after.timestamp());
    assert!(nb <= now() && na > now());
}

#[test]
fn ip_leaf_and_distinct_serials() {
    let ca = SandboxCa::generate("agent-47", DAY).unwrap();
    let ip = IpAddr::V6(Ipv6Addr::LOCALHOST);
    let a = ca.issue_leaf(&LeafName::Ip(ip)).unwrap();
    let b = ca.issue_leaf(&LeafName::Ip(ip)).unwrap();
    let (_, ca_cert) = X509Certificate::from_der(&a.cert[0]).unwrap();
    let (_, cb_cert) = X509Certificate::from_der(&b.cert[0]).unwrap();
    let san = ca_cert.subject_alternative_name().unwrap().unwrap().value;
    assert_eq!(
        san.general_names,
        vec![GeneralName::IPAddress(&ip_bytes(ip))]
    );
    // Shared leaf key, but each leaf is a distinct certificate (NSS rejects reused
    // issuer+serial pairs).
    assert_eq!(ca_cert.public_key().raw, cb_cert.public_key().raw);
    assert_ne!(ca_cert.raw_serial(), cb_cert.raw_serial());
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

#[test]
fn long_ca_gets_capped_leaves() {
    let ca = SandboxCa::generate("long", 1000 * DAY).unwrap();
    let leaf = ca.issue_leaf(&LeafName::dns("a.test").unwrap()).unwrap();
    let (_, cert) = X509Certificate::from_der(&leaf.cert[0]).unwrap();
    let na = cert.validity().not_after.timestamp();
    assert!((na - (now() + LEAF_MAX_VALIDITY.as_secs() as i64)).abs() <= 5);
}

#[test]
fn debug_redacts_keys() {
    let ca = SandboxCa::generate("agent-47", DAY).unwrap();
    let debug = format!("{ca:?} {ca:#?}");
    assert!(debug.contains("agent-47"));
    assert!(debug.contains("redacted"));
    for key in [
        ca.key_pem_for_leak_tests(),
        ca.leaf_key_pem_for_leak_tests(),
    ] {
        assert!(key.contains("PRIVATE KEY"));
        let body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
        assert!(!debug.contains(&body[..32]));
    }
    assert!(!debug.contains("PRIVATE"));
    let leaf = ca.issue_leaf(&LeafName::dns("a.test").unwrap()).unwrap();
    assert!(!format!("{leaf:?}").contains("PRIVATE"));
}

#[test]
fn invalid_inputs_are_refused() {
    assert!(matches!(
        SandboxCa::generate("", DAY),
        Err(TlsError::InvalidSandboxId { .. })
    ));
    assert!(matches!(
        SandboxCa::generate(&"x".repeat(46), DAY),
        Err(TlsError::InvalidSandboxId { .. })
    ));
    assert!(SandboxCa::generate(&"x".repeat(45), DAY).is_ok());
    assert!(matches!(
        SandboxCa::generate("a\nb", DAY),
        Err(TlsError::InvalidSandboxId { .. })
    ));
    // One rule for every entry point: the characters `--sandbox-id` accepts, no others.
    for bad in ["a b", "a/b", "é", "a\"b", "a=b"] {
        assert!(
            matches!(
                SandboxCa::generate(bad, DAY),
                Err(TlsError::InvalidSandboxId { .. })
            ),
            "{bad:?} was accepted"
        );
    }
    assert!(SandboxCa::generate("Agent_47-a.b:c@d", DAY).is_ok());
    assert!(matches!(
        SandboxCa::generate("a", Duration::ZERO),
        Err(TlsError::InvalidValidity(_))
    ));
    assert!(matches!(
        SandboxCa::generate("a", Duration::MAX),
        Err(TlsError::InvalidValidity(_))
    ));

    for bad in [
        "", ".", "*.a.test", "10.0.0.1", "a..b", "a b", "-a.test", "1.2.3.4.",
    ] {
        let err = LeafName::dns(bad).unwrap_err();
        assert!(
            err.to_string().contains("invalid leaf name"),
            "{bad}: {err}"
        );
    }
    let ca = SandboxCa::generate("a", DAY).unwrap();
    assert!(matches!(
        ca.issue_leaf(&LeafName::Dns("not valid".into())),
        Err(TlsError::InvalidLeafName { .. })
    ));
    assert_eq!(
        LeafName::parse("[::1]").unwrap(),
        LeafName::Ip(Ipv6Addr::LOCALHOST.into())
    );
    assert_eq!(
        LeafName::Ip("::ffff:192.0.2.1".parse().unwrap())
            .normalized()
            .unwrap(),
        LeafName::Ip("192.0.2.1".parse().unwrap())
    );
    assert_eq!(
        LeafName::parse("Example.COM").unwrap(),
        LeafName::Dns("example.com".into())
    );
}
