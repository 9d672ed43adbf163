//! TLS session tickets: who encrypts them, and with which keys.
//!
//! vip-l7 resumes sessions by stateless tickets (the session state travels in the ticket,
//! encrypted), as nginx and HAProxy do: any number of clients can resume, where rustls' default
//! server-side cache holds 256 sessions. The ticket keys are either
//!
//! - **the process's own**: random, rotated by rustls every 6 hours. A ticket resumes only on
//!   the vip-l7 process that issued it; or
//! - **a key file** (`[tls] ticket_keys`), like nginx's `ssl_session_ticket_key` and HAProxy's
//!   `tls-ticket-keys`: every vip-l7 behind one VIP loads the same file, so a client whose next
//!   connection the L4 tier sends to another vip-l7 still resumes.
//!
//! One [`Tickets`] serves every listener of the process and outlives reloads, so a ticket
//! issued before a reload still resumes after it. A reload re-reads the key file.
//!
//! # Key file
//!
//! One key per line, 96 hex digits (48 random bytes: a 16-byte key name, which is sent in the
//! clear at the start of every ticket, and a 32-byte AES-256-GCM key). Blank lines and lines
//! starting with `#` are ignored. `openssl rand -hex 48` makes a key. The **first key
//! encrypts** new tickets; every key decrypts. Rotation across a fleet without failed
//! resumptions: add the new key as the *second* line everywhere and reload; then move it to
//! the first line everywhere and reload; drop the oldest key once tickets made with it have
//! expired (the lifetime clients are told is [`LIFETIME_SECS`]). Keep the file readable by
//! vip-l7 only (mode 0600): whoever has the keys can decrypt recorded sessions.
//!
//! Ticket format: key name (16) ‖ nonce (12, random) ‖ AES-256-GCM(session state), with the
//! key name as additional authenticated data.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwapOption;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::server::ProducesTickets;

use crate::tls::TlsError;

/// How long clients are told a ticket is good for (12 hours, as rustls' own ticketer says).
/// Tickets are really valid while their key is in the file.
pub const LIFETIME_SECS: u32 = 12 * 60 * 60;
/// Most keys in a file (the decrypt side looks a ticket's key up by name among them).
pub const MAX_KEYS: usize = 64;
/// Longest ticket accepted for decryption: ours carry a few hundred bytes of session state.
const MAX_TICKET: usize = 4096;
const NAME_LEN: usize = 16;
const KEY_LEN: usize = 32;
const LINE_HEX: usize = 2 * (NAME_LEN + KEY_LEN);

/// One ticket key.
struct Key {
    name: [u8; NAME_LEN],
    key: LessSafeKey,
}

/// The keys of a key file; the first encrypts.
pub struct TicketKeys {
    keys: Vec<Key>,
    rng: SystemRandom,
}

impl fmt::Debug for TicketKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Key names only: they are public (sent in every ticket); keys are not printed.
        write!(
            f,
            "TicketKeys({} keys, encrypting with {})",
            self.keys.len(),
            self.encrypting()
        )
    }
}

fn hex_nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl TicketKeys {
    /// Reads a key file.
    pub fn load(path: &Path) -> Result<TicketKeys, TlsError> {
        let err = |message: String| TlsError::TicketKeys {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
        let keys = Self::parse(&text).map_err(err)?;
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(path) {
            if m.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    "ticket keys {}: readable by others (mode {:o}); chmod 600 it: whoever has the keys can decrypt recorded sessions",
                    path.display(),
                    m.permissions().mode() & 0o777
                );
            }
        }
        Ok(keys)
    }

    /// Parses key file text; the error says which line is wrong and how.
    pub fn parse(text: &str) -> Result<TicketKeys, String> {
        let mut keys: Vec<Key> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let n = i + 1;
            if line.len() != LINE_HEX {
                return Err(format!(
                    "line {n}: {} characters, want {LINE_HEX} hex digits (48 bytes; make a key with `openssl rand -hex 48`)",
                    line.len()
                ));
            }
            let mut bytes = [0u8; NAME_LEN + KEY_LEN];
            for (j, pair) in line.as_bytes().chunks(2).enumerate() {
                match (hex_nibble(pair[0]), hex_nibble(pair[1])) {
                    (Some(h), Some(l)) => bytes[j] = h << 4 | l,
                    _ => return Err(format!("line {n}: not hex digits")),
                }
            }
            let mut name = [0u8; NAME_LEN];
            name.copy_from_slice(&bytes[..NAME_LEN]);
            if let Some(other) = keys.iter().position(|k| k.name == name) {
                return Err(format!(
                    "line {n}: same key name as key {} (the first 32 hex digits); make each key with `openssl rand -hex 48`",
                    other + 1
                ));
            }
            if keys.len() == MAX_KEYS {
                return Err(format!("more than {MAX_KEYS} keys; drop old ones"));
            }
            let key = UnboundKey::new(&AES_256_GCM, &bytes[NAME_LEN..])
                .map_err(|_| format!("line {n}: not a usable AES-256 key"))?;
            keys.push(Key {
                name,
                key: LessSafeKey::new(key),
            });
        }
        if keys.is_empty() {
            return Err("no keys; put one per line, made with `openssl rand -hex 48`".into());
        }
        Ok(TicketKeys {
            keys,
            rng: SystemRandom::new(),
        })
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are none (never, for a parsed file).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The encrypting key's name, in hex (public: every ticket starts with it).
    pub fn encrypting(&self) -> String {
        self.keys[0]
            .name
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let k = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        let tag_len = AES_256_GCM.tag_len();
        if NAME_LEN + NONCE_LEN + plain.len() + tag_len > MAX_TICKET {
            return None;
        }
        let mut out = Vec::with_capacity(NAME_LEN + NONCE_LEN + plain.len() + tag_len);
        out.extend_from_slice(&k.name);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let tag = k
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(k.name),
                &mut out[NAME_LEN + NONCE_LEN..],
            )
            .ok()?;
        out.extend_from_slice(tag.as_ref());
        Some(out)
    }

    /// `None` for anything that is not a ticket made with one of the keys: unknown key name,
    /// wrong length, altered bytes. The input is attacker-controlled; nothing here panics.
    fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        if ticket.len() > MAX_TICKET || ticket.len() < NAME_LEN + NONCE_LEN + AES_256_GCM.tag_len()
        {
            return None;
        }
        let (name, rest) = ticket.split_at(NAME_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        // Key names are public, so a plain comparison leaks nothing.
        let k = self.keys.iter().find(|k| k.name == name)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = sealed.to_vec();
        let len = k
            .key
            .open_in_place(nonce, Aad::from(&k.name), &mut buf)
            .ok()?
            .len();
        buf.truncate(len);
        Some(buf)
    }
}

/// The process's ticket maker: the key file's keys when one is configured, else the
/// process's own rotating keys (which also still decrypt after a key file is configured, so
/// switching to a file costs no resumptions).
pub struct Tickets {
    file: ArcSwapOption<TicketKeys>,
    own: Arc<dyn ProducesTickets>,
}

impl fmt::Debug for Tickets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.file.load() {
            Some(k) => write!(f, "Tickets(file: {k:?})"),
            None => f.write_str("Tickets(own keys)"),
        }
    }
}

impl Tickets {
    fn new() -> Result<Tickets, TlsError> {
        let own = rustls::crypto::ring::Ticketer::new().map_err(|e| TlsError::Rustls {
            context: "session ticket keys".into(),
            source: e,
        })?;
        Ok(Tickets {
            file: ArcSwapOption::empty(),
            own,
        })
    }

    /// The process-wide instance.
    pub fn get() -> Result<Arc<Tickets>, TlsError> {
        static TICKETS: OnceLock<Arc<Tickets>> = OnceLock::new();
        if let Some(t) = TICKETS.get() {
            return Ok(t.clone());
        }
        let t = Arc::new(Tickets::new()?);
        Ok(TICKETS.get_or_init(|| t).clone())
    }

    /// Encrypts new tickets with `keys` (the key file's), or with the process's own keys.
    pub fn use_keys(&self, keys: Option<TicketKeys>) {
        self.file.store(keys.map(Arc::new));
    }

    /// One line for logs and status: where the keys come from.
    pub fn describe(&self) -> String {
        match &*self.file.load() {
            Some(k) => format!(
                "key file: {} key{}, encrypting with key name {}",
                k.len(),
                if k.len() == 1 { "" } else { "s" },
                k.encrypting()
            ),
            None => "per-process keys (no [tls] ticket_keys)".into(),
        }
    }
}

impl ProducesTickets for Tickets {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        match &*self.file.load() {
            Some(_) => LIFETIME_SECS,
            None => self.own.lifetime(),
        }
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        match &*self.file.load() {
            Some(k) => k.encrypt(plain),
            None => self.own.encrypt(plain),
        }
    }

    fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        if let Some(k) = &*self.file.load() {
            if let Some(p) = k.decrypt(ticket) {
                return Some(p);
            }
        }
        self.own.decrypt(ticket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "00112233445566778899aabbccddeeff000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const B: &str = "ffeeddccbbaa99887766554433221100f0e0d0c0b0a090807060504030201000f1f2f3f4f5f6f7f8f9fafbfcfdfeff00";

    fn keys(lines: &[&str]) -> TicketKeys {
        TicketKeys::parse(&lines.join("\n")).unwrap()
    }

    #[test]
    fn the_first_key_encrypts_and_every_key_decrypts() {
        let a = keys(&[A]);
        let t = a.encrypt(b"session state").unwrap();
        assert_eq!(&t[..NAME_LEN], &a.keys[0].name);
        assert_eq!(a.decrypt(&t).unwrap(), b"session state");
        // Rotation: B is added in front; A's tickets still decrypt, new ones use B.
        let ba = keys(&[B, A]);
        assert_eq!(ba.decrypt(&t).unwrap(), b"session state");
        let t2 = ba.encrypt(b"second").unwrap();
        assert_eq!(&t2[..NAME_LEN], &ba.keys[0].name);
        assert!(a.decrypt(&t2).is_none(), "A alone does not know B");
        // A dropped: its tickets no longer decrypt.
        assert!(keys(&[B]).decrypt(&t).is_none());
        // Two tickets of the same state differ (random nonce).
        assert_ne!(a.encrypt(b"x").unwrap(), a.encrypt(b"x").unwrap());
    }

    #[test]
    fn a_ticket_with_any_byte_changed_or_cut_is_refused() {
        let a = keys(&[A]);
        let t = a.encrypt(b"session state").unwrap();
        for i in 0..t.len() {
            let mut bad = t.clone();
            bad[i] ^= 0x01;
            assert!(a.decrypt(&bad).is_none(), "byte {i} flipped");
        }
        for n in 0..t.len() {
            assert!(a.decrypt(&t[..n]).is_none(), "cut to {n}");
        }
        assert!(a.decrypt(&vec![0u8; MAX_TICKET + 1]).is_none());
        let mut long = t.clone();
        long.push(0);
        assert!(a.decrypt(&long).is_none());
    }

    #[test]
    fn key_files_are_checked_line_by_line() {
        let k =
            TicketKeys::parse(&format!("# fleet keys\n\n  {B}  \n{}\n", A.to_uppercase())).unwrap();
        assert_eq!(k.len(), 2);
        assert_eq!(k.encrypting(), &B[..32]);
        let err = |t: &str| TicketKeys::parse(t).unwrap_err();
        assert!(err("").contains("no keys"), "{}", err(""));
        assert!(err("# only a comment\n").contains("no keys"));
        let short = err(&format!("{A}\n{}", &B[..94]));
        assert!(
            short.starts_with("line 2: 94 characters, want 96"),
            "{short}"
        );
        assert!(short.contains("openssl rand -hex 48"), "{short}");
        let nothex = err(&format!("{}zz", &A[..94]));
        assert!(nothex.starts_with("line 1: not hex"), "{nothex}");
        let dup = err(&format!("{A}\n{}{}", &A[..32], &B[32..]));
        assert!(dup.starts_with("line 2: same key name as key 1"), "{dup}");
        let many: Vec<String> = (0..=MAX_KEYS)
            .map(|i| format!("{i:032x}{}", &A[32..]))
            .collect();
        assert!(err(&many.join("\n")).contains("more than 64 keys"));
        // A two-byte character where the last hex pair belongs: 96 bytes, not hex.
        let uni = err(&format!("{}é", &A[..94]));
        assert!(uni.starts_with("line 1: not hex"), "{uni}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config { cases: 2000, ..Default::default() })]

        /// Attacker-controlled tickets: anything not made with a key is refused, without
        /// panicking, including tickets that start with a known key name.
        #[test]
        fn arbitrary_tickets_are_refused(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            named in proptest::prelude::any::<bool>(),
        ) {
            let k = keys(&[A, B]);
            let mut t = Vec::new();
            if named {
                t.extend_from_slice(&k.keys[1].name);
            }
            t.extend_from_slice(&body);
            proptest::prop_assert!(k.decrypt(&t).is_none());
        }

        /// Key file text of any shape gives keys or a line-numbered error, never a panic.
        #[test]
        fn arbitrary_key_files_parse_or_fail_cleanly(
            text in "([0-9a-fA-F#\n ]{0,120}|[0-9a-f]{96}(\n[0-9a-fé]{94,98}){0,3})",
        ) {
            match TicketKeys::parse(&text) {
                Ok(k) => proptest::prop_assert!(!k.is_empty()),
                Err(e) => proptest::prop_assert!(e.starts_with("line ") || e.starts_with("no keys"), "{}", e),
            }
        }
    }

    #[test]
    fn switching_between_own_and_file_keys_keeps_earlier_tickets() {
        let t = Tickets::new().unwrap();
        let own = t.encrypt(b"own").unwrap();
        t.use_keys(Some(keys(&[A])));
        assert_eq!(t.lifetime(), LIFETIME_SECS);
        let file = t.encrypt(b"file").unwrap();
        assert_eq!(&file[..NAME_LEN], &keys(&[A]).keys[0].name);
        assert_eq!(t.decrypt(&own).unwrap(), b"own");
        assert_eq!(t.decrypt(&file).unwrap(), b"file");
        assert!(t.describe().contains(&A[..32]), "{}", t.describe());
        t.use_keys(None);
        assert_eq!(t.decrypt(&own).unwrap(), b"own");
        assert!(t.decrypt(&file).is_none(), "the file's keys are gone");
        assert!(t.describe().contains("per-process"));
    }
}
