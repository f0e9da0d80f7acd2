//! Requests and responses, and their encoding: postcard (varints, zigzag, enum indexes; see
//! `docs/protocol.md`). Enum variant order is part of the protocol: append, never reorder.
//!
//! Movements, outcomes, levels, settings and alerts travel as the engine's own types
//! ([`crate::core`]), so the bytes of a movement on the wire and in the log are the same;
//! `tests::golden_bytes` pins them so that a change to those types cannot pass unnoticed.

use super::codes::ErrorCode;
use super::frame::{finish_frame, FRAME_HEADER_LEN};
use super::limits::Limits;
use crate::core::{
    Effects, LevelDetail, LevelView, Millis, Movement, MovementKind, Outcome, Qty, Seq, SerialView, Settings,
    SkuSettings,
};
use serde::{Deserialize, Serialize};

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Everything: settings (of levels and of SKUs), tokens, every client movement, reads and
    /// the change feed.
    Admin,
    /// Checkout movements: reserve, commit, release, sell, return. Reads levels and settings.
    Checkout,
    /// Warehouse movements: receive, expect, adjust, count, transfer, allocate. Reads levels and
    /// settings.
    Warehouse,
    /// Reads levels and settings, follows the change feed and takes snapshots.
    Reader,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Checkout, Role::Warehouse, Role::Reader];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Checkout => "checkout",
            Role::Warehouse => "warehouse",
            Role::Reader => "reader",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Whether this role may submit a movement of this kind. The engine's own movements
    /// (`Expire`, `CompleteCommit`) are nobody's to send.
    pub fn may_submit(self, kind: &MovementKind) -> bool {
        use MovementKind::*;
        if matches!(kind, Expire { .. } | CompleteCommit { .. }) {
            return false;
        }
        match self {
            Role::Admin => true,
            Role::Checkout => {
                matches!(kind, Reserve { .. } | Commit { .. } | Release { .. } | Sell { .. } | Return { .. })
            }
            Role::Warehouse => matches!(
                kind,
                Receive { .. } | Expect { .. } | Adjust { .. } | Count { .. } | Transfer { .. } | Allocate { .. }
            ),
            Role::Reader => false,
        }
    }

    /// Whether this role may send this request (for a submit, see also [`Role::may_submit`]).
    pub fn may(self, body: &RequestBody) -> bool {
        match body {
            RequestBody::Hello { .. }
            | RequestBody::Level { .. }
            | RequestBody::Levels { .. }
            | RequestBody::LowStock { .. }
            | RequestBody::GetSettings { .. }
            | RequestBody::SkuLevels { .. }
            | RequestBody::LevelDetail { .. }
            | RequestBody::Serial { .. }
            | RequestBody::GetSkuSettings { .. }
            | RequestBody::AvailableFor { .. }
            | RequestBody::Status => true,
            RequestBody::Submit { movements } => movements.iter().all(|m| self.may_submit(&m.kind)),
            RequestBody::Subscribe { .. } | RequestBody::Snapshot => matches!(self, Role::Admin | Role::Reader),
            RequestBody::CreateToken { .. } | RequestBody::ListTokens | RequestBody::RevokeToken { .. } => {
                self == Role::Admin
            }
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which change-feed events a subscriber wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FeedFilter {
    /// Every movement record.
    All,
    /// Only records that raised an alert.
    AlertsOnly,
}

/// A request: `{ id | body }`. The id is chosen by the client and echoed in every response to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub id: u64,
    pub body: RequestBody,
}

/// What a client asks. Variant order is part of the protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestBody {
    /// The first frame of the first stream of a connection, and only there.
    Hello { version: u32, token: String, client: String },
    /// Movements, each decided on its own; answered by [`ResponseBody::Outcomes`] in order.
    Submit { movements: Vec<Movement> },
    /// One level; answered by [`ResponseBody::Level`].
    Level { sku: String, location: String },
    /// Every level, or those of one location; answered by [`ResponseBody::Levels`] chunks.
    Levels { location: Option<String> },
    /// Levels at or below their reorder point (or at or below zero without one); answered by
    /// [`ResponseBody::LowStock`] chunks.
    LowStock { location: Option<String> },
    /// Settings of one level; answered by [`ResponseBody::Settings`].
    GetSettings { sku: String, location: String },
    /// Server counters; answered by [`ResponseBody::Status`].
    Status,
    /// Admin: a new token; answered by [`ResponseBody::Token`] (the secret is shown only then).
    CreateToken { name: String, role: Role },
    /// Admin: answered by [`ResponseBody::Tokens`].
    ListTokens,
    /// Admin: answered by [`ResponseBody::Done`] or `not_found`.
    RevokeToken { id: String },
    /// Follows the change feed from `from_seq`; answered by [`ResponseBody::Feed`] frames until
    /// the stream ends. Should have a stream of its own.
    Subscribe { from_seq: Seq, filter: FeedFilter },
    /// Every level as of one sequence number; answered by [`ResponseBody::Snapshot`] chunks.
    Snapshot,
    /// Every location's level of one SKU; answered by [`ResponseBody::Levels`] chunks.
    SkuLevels { sku: String },
    /// One level with its lots (first to expire first), channel allocations and loose units;
    /// answered by [`ResponseBody::LevelDetail`].
    LevelDetail { sku: String, location: String },
    /// Where a serial number is, its state and history; answered by [`ResponseBody::Serial`].
    Serial { sku: String, serial: String },
    /// A SKU's settings (serial tracking, expiry warning, kit components); answered by
    /// [`ResponseBody::SkuSettings`].
    GetSkuSettings { sku: String },
    /// `available` of a level for one channel (its allocation plus what no channel ring-fenced);
    /// answered by [`ResponseBody::AvailableFor`].
    AvailableFor { sku: String, location: String, channel: String },
}

/// The result of one movement: the sequence number of the record that decided it, and its
/// outcome (a detail or a reason). A rejected movement has a sequence number too when the engine
/// logged the rejection (an idempotency key makes it remembered); `seq` is absent only when
/// the engine decided without logging (a bad field, a mismatched key, shutting down).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MovementOutcome {
    pub seq: Option<Seq>,
    pub outcome: Outcome,
}

/// The server's answer to a good hello.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    pub version: u32,
    pub role: Role,
    pub token_id: String,
    /// "stockd VERSION".
    pub server: String,
    /// Every record up to this one is durable.
    pub durable_seq: Seq,
    pub limits: Limits,
}

/// A token as listed (never with its secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub created_at: Millis,
}

/// A level that is low, with its settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LowStockItem {
    pub level: LevelView,
    pub settings: Settings,
}

/// Server counters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub server: String,
    pub durable_seq: Seq,
    pub log_bytes: u64,
    pub log_syncs: u64,
    pub shards: u16,
    pub connections: u32,
    pub uptime_ms: u64,
}

/// One durable record on the change feed: the movement, its outcome, the levels it changed and
/// the alerts it raised.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedEvent {
    pub seq: Seq,
    pub shard: u16,
    pub recorded_at: Millis,
    pub movement: Movement,
    pub outcome: Outcome,
    pub effects: Effects,
}

/// A response: `{ id | body }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub id: u64,
    pub body: ResponseBody,
}

/// What a server answers. Variant order is part of the protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResponseBody {
    Welcome(Welcome),
    /// The request as a whole failed and changed nothing. `code` is an [`ErrorCode`] string.
    Error {
        code: String,
        message: String,
    },
    /// One per movement of the submit, in order.
    Outcomes {
        results: Vec<MovementOutcome>,
    },
    Level {
        level: Option<LevelView>,
    },
    /// A chunk of levels sorted by SKU then location; `last` ends the answer.
    Levels {
        levels: Vec<LevelView>,
        last: bool,
    },
    LowStock {
        items: Vec<LowStockItem>,
        last: bool,
    },
    Settings {
        settings: Option<Settings>,
    },
    Status(Status),
    Token {
        info: TokenInfo,
        secret: String,
    },
    Tokens {
        tokens: Vec<TokenInfo>,
    },
    Done,
    /// Feed events in sequence order. Every record up to `through_seq` that matches the filter
    /// has been sent: resume from `through_seq + 1`.
    Feed {
        through_seq: Seq,
        events: Vec<FeedEvent>,
    },
    /// The feed was asked for records the log no longer keeps; take a snapshot and resume from
    /// its sequence number + 1, or subscribe from `oldest_available`.
    FeedTruncated {
        oldest_available: Seq,
    },
    /// A chunk of a consistent snapshot of every level as of `seq` (all records up to `seq`,
    /// none after); `last` ends it.
    Snapshot {
        seq: Seq,
        levels: Vec<LevelView>,
        last: bool,
    },
    /// `None`: the level was never recorded (or the SKU is a kit, which has no stock of its own).
    LevelDetail(Option<LevelDetail>),
    /// `None`: the engine never saw this serial number of this SKU.
    Serial(Option<SerialView>),
    /// The default settings for a SKU never configured.
    SkuSettings(SkuSettings),
    /// `None`: the level was never recorded.
    AvailableFor(Option<Qty>),
}

impl ResponseBody {
    pub fn error(code: ErrorCode, message: impl Into<String>) -> ResponseBody {
        ResponseBody::Error { code: code.as_str().into(), message: message.into() }
    }

    /// Whether more frames follow for the same request id.
    pub fn is_last(&self) -> bool {
        match self {
            ResponseBody::Levels { last, .. }
            | ResponseBody::LowStock { last, .. }
            | ResponseBody::Snapshot { last, .. } => *last,
            ResponseBody::Feed { .. } => false,
            _ => true,
        }
    }
}

/// A payload that could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot decode the {what}: {detail}")]
pub struct DecodeError {
    pub what: &'static str,
    pub detail: String,
}

fn decode_error(what: &'static str, e: postcard::Error) -> DecodeError {
    DecodeError { what, detail: e.to_string() }
}

/// Reads the request id at the front of a payload, if there is one.
pub fn peek_id(payload: &[u8]) -> Option<u64> {
    postcard::take_from_bytes::<u64>(payload).ok().map(|(id, _)| id)
}

fn decode_with_id<T: for<'de> Deserialize<'de>>(payload: &[u8], what: &'static str) -> Result<(u64, T), DecodeError> {
    let (id, rest) = postcard::take_from_bytes::<u64>(payload).map_err(|e| decode_error(what, e))?;
    let (body, rest) = postcard::take_from_bytes::<T>(rest).map_err(|e| decode_error(what, e))?;
    if !rest.is_empty() {
        return Err(DecodeError { what, detail: format!("{} bytes after the message", rest.len()) });
    }
    Ok((id, body))
}

impl Request {
    pub fn decode(payload: &[u8]) -> Result<Request, DecodeError> {
        decode_with_id(payload, "request").map(|(id, body)| Request { id, body })
    }
}

/// The [`crate::core::body_hash`] of each movement of a submission, taken from its bytes as they
/// came (the hash is of the movement's postcard encoding, so its own bytes give it without
/// encoding it again). A reservation sent with a hold id other than 0 is hashed in its client form
/// (hold 0) by encoding it again.
pub type BodyHashes = Vec<u64>;

impl Request {
    /// [`Request::decode`], and for a submission the body hash of each movement (see
    /// [`BodyHashes`]); `None` for any other request. Errors are those of [`Request::decode`].
    pub fn decode_hashed(payload: &[u8]) -> Result<(Request, Option<BodyHashes>), DecodeError> {
        match decode_submit_hashed(payload) {
            Some((id, movements, hashes)) => {
                Ok((Request { id, body: RequestBody::Submit { movements } }, Some(hashes)))
            }
            None => Request::decode(payload).map(|r| (r, None)),
        }
    }
}

/// A well-formed submission: its id, movements and their body hashes; `None` for anything else
/// (another request, or a malformed one: the general decoder then says what is wrong).
fn decode_submit_hashed(payload: &[u8]) -> Option<(u64, Vec<Movement>, BodyHashes)> {
    let (id, rest) = postcard::take_from_bytes::<u64>(payload).ok()?;
    let (variant, rest) = postcard::take_from_bytes::<u64>(rest).ok()?;
    if variant != SUBMIT_VARIANT {
        return None;
    }
    let (count, mut rest) = postcard::take_from_bytes::<u64>(rest).ok()?;
    // Every movement takes more than one byte: a count beyond the bytes left is malformed.
    let count = usize::try_from(count).ok().filter(|&n| n <= rest.len())?;
    let mut movements = Vec::with_capacity(count);
    let mut hashes = Vec::with_capacity(count);
    for _ in 0..count {
        let (movement, after) = postcard::take_from_bytes::<Movement>(rest).ok()?;
        let sent_hold = matches!(movement.kind, crate::core::MovementKind::Reserve { hold, .. } if hold != 0);
        let bytes = &rest[..rest.len() - after.len()];
        hashes.push(if sent_hold { crate::core::body_hash(&movement) } else { crate::core::body_hash_of_bytes(bytes) });
        movements.push(movement);
        rest = after;
    }
    rest.is_empty().then_some((id, movements, hashes))
}

impl Response {
    pub fn decode(payload: &[u8]) -> Result<Response, DecodeError> {
        decode_with_id(payload, "response").map(|(id, body)| Response { id, body })
    }
}

/// Appends the frame of a request.
pub fn encode_request(buf: &mut Vec<u8>, id: u64, body: &RequestBody) {
    super::frame::encode_frame(buf, &(id, body));
}

/// Appends the frame of a response.
pub fn encode_response(buf: &mut Vec<u8>, id: u64, body: &ResponseBody) {
    super::frame::encode_frame(buf, &(id, body));
}

/// The postcard bytes of a request body, to be framed (and re-framed on a retry) with
/// [`encode_request_raw`].
pub fn encode_body(body: &RequestBody) -> Vec<u8> {
    let mut v = Vec::new();
    crate::wal::record::encode_into(&mut v, body);
    v
}

/// The encoded body of a [`RequestBody::Submit`] of these movements, without copying them into
/// a request first.
pub fn encode_submit_body(movements: &[Movement]) -> Vec<u8> {
    let mut v = Vec::with_capacity(16 + 64 * movements.len());
    push_varint(&mut v, SUBMIT_VARIANT);
    crate::wal::record::encode_into(&mut v, movements);
    v
}

/// The variant index of [`RequestBody::Submit`].
const SUBMIT_VARIANT: u64 = 1;

/// Appends the frame of a request whose body is already encoded.
pub fn encode_request_raw(buf: &mut Vec<u8>, id: u64, body: &[u8]) {
    let start = buf.len();
    buf.extend_from_slice(&[0; FRAME_HEADER_LEN]);
    push_varint(buf, id);
    buf.extend_from_slice(body);
    finish_frame(buf, start);
}

/// LEB128: 7 bits at a time, low first, high bit set on every byte but the last.
pub fn push_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

#[cfg(test)]
mod tests {
    use super::super::PROTOCOL_VERSION;
    use super::*;
    use crate::core::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(" ")
    }

    fn frame_of(id: u64, body: &RequestBody) -> Vec<u8> {
        let mut v = Vec::new();
        encode_request(&mut v, id, body);
        v
    }

    /// The examples of docs/protocol.md (section 12), byte for byte. A failure here means the wire
    /// format changed: bump PROTOCOL_VERSION (and the ALPN) and update the page. Version 2 added
    /// `units` to movements, and the pins of a lot, serial numbers, an allocation and a new read.
    #[test]
    fn golden_bytes() {
        let hello = RequestBody::Hello { version: PROTOCOL_VERSION, token: "t".into(), client: "c".into() };
        assert_eq!(hex(&frame_of(0, &hello)), "07 00 00 00 00 00 02 01 74 01 63");

        let sell = Movement {
            key: Some("k1".into()),
            channel: "web".into(),
            reference: None,
            occurred_at: None,
            kind: MovementKind::Sell {
                sku: "A".into(),
                location: "dc".into(),
                qty: 3,
                unit_price: Some(1250),
                hold: None,
                allow_negative: false,
                units: Units::ANY,
            },
        };
        let submit = RequestBody::Submit { movements: vec![sell] };
        // Version 2: `units` (lot None, lot_expires_at None, serials []) ends the Sell.
        assert_eq!(
            hex(&frame_of(300, &submit)),
            "1d 00 00 00 ac 02 01 01 01 02 6b 31 03 77 65 62 00 00 02 01 41 02 64 63 06 01 c4 13 00 00 00 00 00"
        );

        // A receive of 24 `A` at `dc` into a new lot `L1` that expires at 1700000000000.
        let receive = Movement {
            key: Some("k2".into()),
            channel: "erp".into(),
            reference: None,
            occurred_at: None,
            kind: MovementKind::Receive {
                sku: "A".into(),
                location: "dc".into(),
                qty: 24,
                unit_cost: None,
                units: Units::new_lot("L1", 1_700_000_000_000),
            },
        };
        let submit = RequestBody::Submit { movements: vec![receive] };
        assert_eq!(
            hex(&frame_of(1, &submit)),
            "21 00 00 00 01 01 01 01 02 6b 32 03 65 72 70 00 00 00 01 41 02 64 63 30 00 \
             01 02 4c 31 01 80 d0 95 ff bc 31 00"
        );

        // A sale of the serial numbers S1 and S2 of `P` at `dc`, no key, from `pos`.
        let sell_serials = Movement {
            key: None,
            channel: "pos".into(),
            reference: None,
            occurred_at: None,
            kind: MovementKind::Sell {
                sku: "P".into(),
                location: "dc".into(),
                qty: 2,
                unit_price: None,
                hold: None,
                allow_negative: false,
                units: Units::serials(&["S1", "S2"]),
            },
        };
        let submit = RequestBody::Submit { movements: vec![sell_serials] };
        assert_eq!(
            hex(&frame_of(2, &submit)),
            "1d 00 00 00 02 01 01 00 03 70 6f 73 00 00 02 01 50 02 64 63 04 00 00 00 00 00 02 02 53 31 02 53 32"
        );

        // 5 units of `A` at `dc` ring-fenced for the channel `web`.
        let allocate = Movement {
            key: None,
            channel: "erp".into(),
            reference: None,
            occurred_at: None,
            kind: MovementKind::Allocate { sku: "A".into(), location: "dc".into(), channel: "web".into(), qty: 5 },
        };
        let submit = RequestBody::Submit { movements: vec![allocate] };
        assert_eq!(
            hex(&frame_of(3, &submit)),
            "15 00 00 00 03 01 01 00 03 65 72 70 00 00 0c 01 41 02 64 63 03 77 65 62 0a"
        );

        // The new reads and an answer.
        let read = RequestBody::AvailableFor { sku: "A".into(), location: "dc".into(), channel: "web".into() };
        assert_eq!(hex(&frame_of(4, &read)), "0b 00 00 00 04 10 01 41 02 64 63 03 77 65 62");
        let mut out = Vec::new();
        encode_response(&mut out, 4, &ResponseBody::AvailableFor(Some(5)));
        assert_eq!(hex(&out), "04 00 00 00 04 11 01 0a");

        let mut out = Vec::new();
        let results = vec![
            MovementOutcome { seq: Some(7), outcome: Ok(Detail::None) },
            MovementOutcome { seq: None, outcome: Err(Reason::InsufficientStock) },
            MovementOutcome { seq: Some(9), outcome: Ok(Detail::Hold(65_537)) },
        ];
        encode_response(&mut out, 300, &ResponseBody::Outcomes { results });
        assert_eq!(hex(&out), "12 00 00 00 ac 02 02 03 01 07 00 00 00 01 00 01 09 00 01 81 80 04");

        let mut out = Vec::new();
        encode_response(&mut out, 5, &ResponseBody::error(ErrorCode::Forbidden, "no"));
        assert_eq!(hex(&out), "0f 00 00 00 05 01 09 66 6f 72 62 69 64 64 65 6e 02 6e 6f");
    }

    #[test]
    fn requests_and_responses_round_trip() {
        let bodies = vec![
            RequestBody::Levels { location: Some("dc".into()) },
            RequestBody::Subscribe { from_seq: u64::MAX, filter: FeedFilter::AlertsOnly },
            RequestBody::CreateToken { name: "pos".into(), role: Role::Checkout },
            RequestBody::LevelDetail { sku: "A".into(), location: "dc".into() },
            RequestBody::Serial { sku: "A".into(), serial: "SN-1".into() },
            RequestBody::GetSkuSettings { sku: "KIT".into() },
            RequestBody::AvailableFor { sku: "A".into(), location: "dc".into(), channel: "web".into() },
        ];
        for (i, body) in bodies.into_iter().enumerate() {
            let f = frame_of(i as u64 * 1000, &body);
            assert_eq!(u32::from_le_bytes(f[..4].try_into().unwrap()) as usize, f.len() - 4);
            assert_eq!(Request::decode(&f[4..]).unwrap(), Request { id: i as u64 * 1000, body: body.clone() });
            let mut raw = Vec::new();
            encode_request_raw(&mut raw, i as u64 * 1000, &encode_body(&body));
            assert_eq!(raw, f);
        }
        let movements = vec![Movement {
            key: None,
            channel: "pos".into(),
            reference: Some("r".into()),
            occurred_at: Some(5),
            kind: MovementKind::Commit { hold: 77 },
        }];
        assert_eq!(encode_submit_body(&movements), encode_body(&RequestBody::Submit { movements }));

        let level = LevelView {
            sku: "A".into(),
            location: "dc".into(),
            on_hand: 7,
            reserved: 1,
            unsellable: 2,
            incoming: 0,
            safety_stock: 0,
            available: 4,
        };
        let lot = LotView {
            sku: "A".into(),
            location: "dc".into(),
            lot: "L1".into(),
            expires_at: 1_700_000_000_000,
            on_hand: 5,
            reserved: 1,
            expired: false,
        };
        let serial = SerialView {
            sku: "P".into(),
            serial: "SN-1".into(),
            location: "dc".into(),
            status: SerialStatus::Reserved(65_537),
            history: vec![SerialEvent { seq: 3, at: 1_700_000_000_000, what: "receive".into(), location: "dc".into() }],
        };
        let settings = SkuSettings {
            serial_tracked: false,
            expiry_warning_days: Some(30),
            components: vec![Component { sku: "SOAP".into(), qty: 2 }],
        };
        let responses = vec![
            ResponseBody::LevelDetail(Some(LevelDetail {
                level,
                lots: vec![lot],
                allocations: vec![("web".into(), 3)],
                loose_on_hand: 2,
            })),
            ResponseBody::LevelDetail(None),
            ResponseBody::Serial(Some(serial)),
            ResponseBody::Serial(None),
            ResponseBody::SkuSettings(settings),
            ResponseBody::AvailableFor(Some(-1)),
            ResponseBody::AvailableFor(None),
        ];
        for body in responses {
            let mut f = Vec::new();
            encode_response(&mut f, 9, &body);
            assert_eq!(Response::decode(&f[FRAME_HEADER_LEN..]).unwrap(), Response { id: 9, body });
        }
    }

    #[test]
    fn trailing_bytes_and_truncation_are_errors() {
        let f = frame_of(1, &RequestBody::Status);
        let mut long = f[4..].to_vec();
        long.push(0);
        assert!(Request::decode(&long).is_err());
        assert!(Request::decode(&f[4..5]).is_err());
        assert!(Request::decode(&[]).is_err());
        assert_eq!(peek_id(&f[4..]), Some(1));
    }

    #[test]
    fn a_submission_decodes_with_the_body_hash_of_each_movement() {
        let line = |sku: &str| Line {
            sku: sku.into(),
            location: "dc".into(),
            qty: 2,
            unit_price: Some(150),
            units: Units::ANY,
            kit: None,
        };
        let movement = |key: Option<&str>, kind: MovementKind| Movement {
            key: key.map(Into::into),
            channel: "web".into(),
            reference: Some("order-7".into()),
            occurred_at: Some(1_700_000_000_000),
            kind,
        };
        let reserve = |hold| MovementKind::Reserve { hold, lines: vec![line("A"), line("B")], expires_at: 99 };
        let movements = vec![
            movement(Some("k1"), reserve(0)),
            // A hold id sent by a client is not part of the body: hashed as 0.
            movement(Some("k2"), reserve(123_456)),
            movement(None, MovementKind::Commit { hold: 7 }),
            movement(
                Some("k3"),
                MovementKind::Count { sku: "A".into(), location: "dc".into(), counted: 4, units: Units::lot("L1") },
            ),
        ];
        let frame = frame_of(5, &RequestBody::Submit { movements: movements.clone() });
        let (request, hashes) = Request::decode_hashed(&frame[FRAME_HEADER_LEN..]).unwrap();
        assert_eq!(request, Request { id: 5, body: RequestBody::Submit { movements: movements.clone() } });
        let expected: Vec<u64> = movements.iter().map(body_hash).collect();
        assert_eq!(hashes, Some(expected.clone()));
        assert_eq!(expected[1], body_hash(&movement(Some("k2"), reserve(0))));
        assert_ne!(expected[0], expected[1]); // the keys differ

        // Anything else decodes as usual, without hashes; malformed submissions fail as usual.
        let status = frame_of(6, &RequestBody::Status);
        assert_eq!(Request::decode_hashed(&status[4..]).unwrap(), (Request { id: 6, body: RequestBody::Status }, None));
        let mut long = frame[4..].to_vec();
        long.push(0);
        assert_eq!(Request::decode_hashed(&long).unwrap_err(), Request::decode(&long).unwrap_err());
        let short = &frame[4..frame.len() - 1];
        assert_eq!(Request::decode_hashed(short).unwrap_err(), Request::decode(short).unwrap_err());
        // A count of movements beyond the bytes left (id 1, submit, 200 movements, 1 byte).
        let absurd = [1, 1, 0xc8, 0x01, 0];
        assert_eq!(Request::decode_hashed(&absurd).unwrap_err(), Request::decode(&absurd).unwrap_err());
    }

    /// The hash is of the bytes as sent: the same movement in longer (non-minimal) varints is
    /// another body, so a retry must send the same bytes (what postcard encoders do).
    #[test]
    fn a_movement_sent_in_other_bytes_has_another_body_hash() {
        let m = Movement {
            key: Some("k".into()),
            channel: "pos".into(),
            reference: None,
            occurred_at: Some(5),
            kind: MovementKind::Release { hold: 9 },
        };
        let frame = frame_of(1, &RequestBody::Submit { movements: vec![m.clone()] });
        let minimal = frame[FRAME_HEADER_LEN..].to_vec();
        // occurred_at: Some(5) is `01 05`; `01 85 00` is 5 in a two-byte varint.
        let at = minimal.windows(2).position(|w| w == [1, 5]).unwrap();
        let mut longer = minimal[..at + 1].to_vec();
        longer.extend_from_slice(&[0x85, 0x00]);
        longer.extend_from_slice(&minimal[at + 2..]);
        let (a, ha) = Request::decode_hashed(&minimal).unwrap();
        let (b, hb) = Request::decode_hashed(&longer).unwrap();
        assert_eq!(a, b);
        assert_eq!(ha, Some(vec![body_hash(&m)]));
        assert_ne!(ha, hb);
    }

    #[test]
    fn roles_allow_what_the_issue_says() {
        let kind = |name: &str| -> MovementKind {
            let (sku, location) = ("A".to_string(), "dc".to_string());
            match name {
                "receive" => MovementKind::Receive { sku, location, qty: 1, unit_cost: None, units: Units::ANY },
                "sell" => MovementKind::Sell {
                    sku,
                    location,
                    qty: 1,
                    unit_price: None,
                    hold: None,
                    allow_negative: false,
                    units: Units::ANY,
                },
                "reserve" => MovementKind::Reserve { hold: 0, lines: vec![], expires_at: 0 },
                "settings" => MovementKind::SetSettings { sku, location, settings: Settings::default() },
                "allocate" => MovementKind::Allocate { sku, location, channel: "web".into(), qty: 5 },
                "sku_settings" => MovementKind::SetSkuSettings { sku, settings: SkuSettings::default() },
                "expire" => MovementKind::Expire { holds_expired_by: 0, keys_seen_before: 0, keys_max: 0 },
                "complete_commit" => MovementKind::CompleteCommit { hold: 65_537 },
                _ => unreachable!(),
            }
        };
        // Columns: admin, checkout, warehouse, reader.
        let table = [
            ("receive", [true, false, true, false]),
            ("sell", [true, true, false, false]),
            ("reserve", [true, true, false, false]),
            ("settings", [true, false, false, false]),
            ("allocate", [true, false, true, false]),
            ("sku_settings", [true, false, false, false]),
            ("expire", [false; 4]),
            ("complete_commit", [false; 4]),
        ];
        for (name, allowed) in table {
            for (role, ok) in Role::ALL.into_iter().zip(allowed) {
                assert_eq!(role.may_submit(&kind(name)), ok, "{role} {name}");
            }
        }
        let feed = RequestBody::Subscribe { from_seq: 0, filter: FeedFilter::All };
        assert_eq!(Role::ALL.map(|r| r.may(&feed)), [true, false, false, true]);
        assert_eq!(Role::ALL.map(|r| r.may(&RequestBody::ListTokens)), [true, false, false, false]);
        assert_eq!(Role::ALL.map(|r| r.may(&RequestBody::Levels { location: None })), [true; 4]);
        let (sku, location) = ("A".to_string(), "dc".to_string());
        for read in [
            RequestBody::LevelDetail { sku: sku.clone(), location: location.clone() },
            RequestBody::Serial { sku: sku.clone(), serial: "S1".into() },
            RequestBody::GetSkuSettings { sku: sku.clone() },
            RequestBody::AvailableFor { sku, location, channel: "web".into() },
        ] {
            assert_eq!(Role::ALL.map(|r| r.may(&read)), [true; 4], "{read:?}");
        }
    }
}
