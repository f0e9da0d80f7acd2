//! Kits (bundles) as pure functions: expanding kit lines into component lines, and a kit's level
//! derived from its components' levels. The engine (which sees every shard) calls these.

use super::types::*;

/// Expands the lines of a reservation: a line whose SKU is a kit (per `kit_of`) becomes one line
/// per component, `qty * component.qty` each, with no price of its own, marked with the kit, its
/// quantity and its price per kit (the kit line's `unit_price`). A (SKU, location) named more
/// than once, directly or through kits, becomes one line with the quantities added; it keeps the
/// first line's price, units and kit mark. Lines naming a kit with units (lot or serials) are
/// refused: kits have no lots or serials of their own.
pub fn expand_kit_lines<'a>(
    lines: Vec<Line>,
    kit_of: impl Fn(&str) -> Option<&'a [Component]>,
) -> Result<Vec<Line>, Reason> {
    let mut out: Vec<Line> = Vec::with_capacity(lines.len());
    let push = |line: Line, out: &mut Vec<Line>| -> Result<(), Reason> {
        match out.iter_mut().find(|l| l.sku == line.sku && l.location == line.location) {
            Some(l) => {
                if !l.units.is_any() || !line.units.is_any() {
                    return Err(Reason::InvalidLines);
                }
                l.qty =
                    l.qty.checked_add(line.qty).filter(|&q| q <= MOVEMENT_QTY_MAX).ok_or(Reason::InvalidQuantity)?;
            }
            None => out.push(line),
        }
        Ok(())
    };
    for line in lines {
        let Some(components) = kit_of(&line.sku) else {
            push(line, &mut out)?;
            continue;
        };
        if !line.units.is_any() {
            return Err(Reason::InvalidLot);
        }
        for c in components {
            let qty = line.qty.checked_mul(c.qty).filter(|&q| q <= MOVEMENT_QTY_MAX).ok_or(Reason::InvalidQuantity)?;
            let component = Line {
                sku: c.sku.clone(),
                location: line.location.clone(),
                qty,
                unit_price: None,
                units: Units::ANY,
                kit: Some(KitRef { sku: line.sku.clone(), qty: line.qty, unit_price: line.unit_price }),
            };
            push(component, &mut out)?;
        }
    }
    if out.len() > HOLD_LINES_MAX {
        return Err(Reason::InvalidLines);
    }
    Ok(out)
}

/// A kit's level at one location, derived from its components' levels (`None`: the component
/// has no level there): `available` and `on_hand` are how many whole kits the components make;
/// the other quantities are 0. `None` when no component has a level at that location.
pub fn kit_level(
    kit: &str,
    location: &str,
    components: &[Component],
    levels: &[Option<LevelView>],
) -> Option<LevelView> {
    if levels.iter().all(Option::is_none) {
        return None;
    }
    let whole = |f: fn(&LevelView) -> Qty| {
        components.iter().zip(levels).map(|(c, l)| l.as_ref().map_or(0, |l| f(l).max(0) / c.qty)).min().unwrap_or(0)
    };
    Some(LevelView {
        sku: kit.to_owned(),
        location: location.to_owned(),
        on_hand: whole(|l| l.on_hand),
        reserved: 0,
        unsellable: 0,
        incoming: 0,
        safety_stock: 0,
        available: whole(|l| l.available),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(sku: &str, qty: Qty) -> Line {
        Line { sku: sku.into(), location: "dc".into(), qty, unit_price: Some(500), units: Units::ANY, kit: None }
    }

    fn comps(list: &[(&str, Qty)]) -> Vec<Component> {
        list.iter().map(|(s, q)| Component { sku: (*s).into(), qty: *q }).collect()
    }

    #[test]
    fn kit_lines_expand_and_merge() {
        let gift = comps(&[("SOAP", 2), ("CREAM", 1)]);
        let kit_of = |sku: &str| (sku == "GIFT").then_some(gift.as_slice());
        let out = expand_kit_lines(vec![line("GIFT", 3), line("SOAP", 1), line("TOWEL", 4)], kit_of).unwrap();
        let got: Vec<(&str, Qty, Option<&str>)> =
            out.iter().map(|l| (l.sku.as_str(), l.qty, l.kit.as_ref().map(|k| k.sku.as_str()))).collect();
        assert_eq!(got, vec![("SOAP", 7, Some("GIFT")), ("CREAM", 3, Some("GIFT")), ("TOWEL", 4, None)]);
        // The kit's price (500 per kit) is on the mark; the component lines have none.
        let mark = Some(KitRef { sku: "GIFT".into(), qty: 3, unit_price: Some(500) });
        assert_eq!((&out[0].kit, &out[1].kit), (&mark, &mark));
        assert_eq!((out[0].unit_price, out[1].unit_price), (None, None));
        // A kit line without a price gives a mark without one; a plain line keeps its price.
        let mut unpriced = line("GIFT", 1);
        unpriced.unit_price = None;
        let out = expand_kit_lines(vec![unpriced, line("TOWEL", 1)], kit_of).unwrap();
        assert_eq!(out[0].kit, Some(KitRef { sku: "GIFT".into(), qty: 1, unit_price: None }));
        assert_eq!((out[2].unit_price, &out[2].kit), (Some(500), &None));
        let mut with_lot = line("GIFT", 1);
        with_lot.units = Units::lot("L1");
        assert_eq!(expand_kit_lines(vec![with_lot], kit_of), Err(Reason::InvalidLot));
    }

    #[test]
    fn kit_level_is_whole_kits_of_the_scarcest_component() {
        let gift = comps(&[("SOAP", 2), ("CREAM", 1)]);
        let lv = |on_hand, available| LevelView {
            sku: "x".into(),
            location: "dc".into(),
            on_hand,
            reserved: 0,
            unsellable: 0,
            incoming: 0,
            safety_stock: 0,
            available,
        };
        let got = kit_level("GIFT", "dc", &gift, &[Some(lv(9, 7)), Some(lv(5, 4))]).unwrap();
        assert_eq!((got.on_hand, got.available), (4, 3));
        let none_cream = kit_level("GIFT", "dc", &gift, &[Some(lv(9, 7)), None]).unwrap();
        assert_eq!((none_cream.on_hand, none_cream.available), (0, 0));
        assert_eq!(kit_level("GIFT", "dc", &gift, &[None, None]), None);
    }
}
