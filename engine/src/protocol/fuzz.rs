//! Property tests of the decoders over random and mutated bytes: every input gives a message or
//! an error, never a panic, and nothing is buffered beyond the frame limit.

use super::*;
use crate::core::*;
use proptest::prelude::*;

fn arb_units() -> impl Strategy<Value = Units> {
    let s = "[a-z0-9]{0,8}";
    (proptest::option::of(s), any::<Option<u64>>(), proptest::collection::vec(s, 0..3))
        .prop_map(|(lot, lot_expires_at, serials)| Units { lot, lot_expires_at, serials })
}

fn arb_movement() -> impl Strategy<Value = Movement> {
    let s = "[a-z]{0,8}";
    (s, s, any::<i64>(), any::<Option<u64>>(), 0u8..8, arb_units()).prop_map(|(sku, loc, qty, at, k, units)| Movement {
        key: if k % 2 == 0 { Some(format!("{sku}-{qty}")) } else { None },
        channel: "web".into(),
        reference: None,
        occurred_at: at,
        kind: match k {
            0 => MovementKind::Receive { sku, location: loc, qty, unit_cost: at.map(|v| v as i64), units },
            1 => MovementKind::Transfer { sku, from: loc.clone(), to: loc, qty, units },
            2 => MovementKind::Reserve {
                hold: 0,
                lines: vec![Line {
                    kit: (qty % 2 == 0).then(|| KitRef { sku: loc.clone(), qty, unit_price: at.map(|v| v as i64) }),
                    sku,
                    location: loc,
                    qty,
                    unit_price: None,
                    units,
                }],
                expires_at: at.unwrap_or(0),
            },
            3 => MovementKind::Commit { hold: qty as u64 },
            4 => MovementKind::Allocate { sku, location: loc.clone(), channel: loc, qty },
            5 => MovementKind::SetSkuSettings {
                sku: sku.clone(),
                settings: SkuSettings {
                    serial_tracked: qty % 2 == 0,
                    expiry_warning_days: at.map(|v| v as u16),
                    components: vec![Component { sku, qty }],
                },
            },
            _ => MovementKind::Adjust {
                sku,
                location: loc,
                delta: qty,
                reason: AdjustReason::Found,
                allow_negative: true,
                units,
            },
        },
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic_the_decoders(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Request::decode(&bytes);
        let _ = Response::decode(&bytes);
        let _ = peek_id(&bytes);
        let mut fb = FrameBuffer::new(256);
        fb.extend(&bytes);
        while let Ok(Some(payload)) = fb.next_frame() {
            prop_assert!(payload.len() <= 256);
            let _ = Request::decode(payload);
        }
    }

    #[test]
    fn mutated_requests_never_panic_and_valid_ones_round_trip(
        id in any::<u64>(),
        movements in proptest::collection::vec(arb_movement(), 0..4),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        cut in any::<usize>(),
    ) {
        let body = RequestBody::Submit { movements };
        let mut frame = Vec::new();
        encode_request(&mut frame, id, &body);
        let payload = &frame[FRAME_HEADER_LEN..];
        prop_assert_eq!(Request::decode(payload).unwrap(), Request { id, body });
        let mut bad = payload.to_vec();
        for (at, x) in flips {
            let n = bad.len();
            bad[at % n] ^= x;
        }
        let _ = Request::decode(&bad);
        let _ = Request::decode(&bad[..cut % (bad.len() + 1)]);
    }
}
