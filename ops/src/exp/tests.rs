use super::*;

struct Rec {
    bins: Vec<(Vec<u8>, u8, Vec<u8>)>,
    meta: Meta,
}

impl RecordAccess for Rec {
    fn bin(&self, name: &[u8]) -> Option<(u8, &[u8])> {
        self.bins
            .iter()
            .find(|b| b.0 == name)
            .map(|b| (b.1, b.2.as_slice()))
    }
    fn meta(&self) -> &Meta {
        &self.meta
    }
}

fn rec() -> Rec {
    Rec {
        bins: vec![
            (b"a".to_vec(), ptype::INTEGER, 8i64.to_be_bytes().to_vec()),
            (b"s".to_vec(), ptype::STRING, b"hi".to_vec()),
            (b"l".to_vec(), ptype::LIST, vec![0x93, 1, 2, 3]),
        ],
        meta: Meta {
            set_name: b"demo".to_vec(),
            void_time: 0,
            ..Default::default()
        },
    }
}

#[test]
fn captured_filter_evaluates() {
    // Eq(IntBin('a'), 8) as the Python client sends it (spec §4.8).
    let eq = [0x93, 0x01, 0x93, 0x51, 0x02, 0xa1, 0x61, 0x08];
    assert!(filter(&eq, &rec()).unwrap());
    let mut r = rec();
    r.bins[0].2 = 9i64.to_be_bytes().to_vec();
    assert!(!filter(&eq, &r).unwrap());
    // A missing bin is unknown: the filter fails without an error.
    r.bins.remove(0);
    assert!(!filter(&eq, &r).unwrap());
}

/// Aerospike CE 8.1.2 on "abc\nxyz": newline semantics for flag 4 (the clients'
/// REGEX_NOSUB), none for 8 (their REGEX_NEWLINE).
#[test]
fn regex_newline_is_glibc_flag_4() {
    let mut r = rec();
    r.bins[1].2 = b"abc\nxyz".to_vec();
    let regex = |flags: u8| {
        let mut e = vec![0x94, code::REGEX, flags, 0xa4];
        e.extend_from_slice(b"^xyz");
        e.extend_from_slice(&[0x93, 0x51, 0x03, 0xa1, b's']);
        e
    };
    assert!(filter(&regex(4), &r).unwrap());
    assert!(!filter(&regex(8), &r).unwrap());
    assert!(!filter(&regex(0), &r).unwrap());
}

#[test]
fn logic_is_three_valued() {
    // Or(Eq(IntBin('zz'), 1), Eq(StrBin('s'), 'hi')): unknown OR true = true.
    let e = [
        0x93, 0x11, 0x93, 0x01, 0x93, 0x51, 0x02, 0xa2, b'z', b'z', 0x01, 0x93, 0x01, 0x93, 0x51,
        0x03, 0xa1, b's', 0xa3, 0x03, b'h', b'i',
    ];
    assert!(filter(&e, &rec()).unwrap());
    // Not(Eq(IntBin('zz'), 1)) stays unknown.
    let e = [
        0x92, 0x12, 0x93, 0x01, 0x93, 0x51, 0x02, 0xa2, b'z', b'z', 0x01,
    ];
    assert!(!filter(&e, &rec()).unwrap());
}

#[test]
fn let_cond_arithmetic_and_list_calls() {
    // Let(Def('x', Add(IntBin('a'), 2)), Cond(Gt(Var('x'), 9), Var('x'), 0)) = 10.
    let e = [
        0x94, 0x7d, 0xa1, b'x', 0x93, 0x14, 0x93, 0x51, 0x02, 0xa1, b'a', 0x02, 0x94, 0x7b, 0x93,
        0x03, 0x92, 0x7c, 0xa1, b'x', 0x09, 0x92, 0x7c, 0xa1, b'x', 0x00,
    ];
    let v = evaluate(&parse(&e).unwrap(), &rec()).unwrap();
    assert_eq!(v.unwrap().as_int(), Some(10));
    // ListExp.size(ListBin('l')) = [127, 2, 0, [16], [81, 4, 'l']] = 3.
    let e = [
        0x95, 0x7f, 0x02, 0x00, 0x91, 0x10, 0x93, 0x51, 0x04, 0xa1, b'l',
    ];
    let v = evaluate(&parse(&e).unwrap(), &rec()).unwrap();
    assert_eq!(v.unwrap().as_int(), Some(3));
}

#[test]
fn oversized_expressions_are_refused() {
    // And(true x 5000): too many nodes. Or of 65 ListSize calls: too many calls.
    let mut big = vec![0xdc, 0x13, 0x89, 0x10];
    big.extend(std::iter::repeat_n(0xc3, 5000));
    assert_eq!(parse(&big).unwrap_err().result_code(), 4);
    let call = [
        0x95, 0x7f, 0x02, 0x00, 0x91, 0x10, 0x93, 0x51, 0x04, 0xa1, b'l',
    ];
    let mut calls = vec![0xdc, 0x00, 66, 0x11];
    for _ in 0..65 {
        calls.extend([0x93, 0x03]);
        calls.extend(call);
        calls.push(0x00);
    }
    assert_eq!(parse(&calls).unwrap_err().result_code(), 4);
}

#[test]
fn malformed_expressions_are_errors() {
    for bad in [
        &[0x90][..],
        &[0x91, 0xcc, 0xfa],
        &[0x93, 0x01, 0x08],
        &[0x93, 0x51, 0x02, 0x05],
        &[0x92, 0x7c, 0xa1, b'q'],
    ] {
        let r = parse(bad).and_then(|e| evaluate(&e, &rec()));
        assert!(r.is_err(), "{bad:x?}");
    }
    let mut deep = [0x92u8, 0x12].repeat(DEPTH_MAX + 2);
    deep.push(0xc3);
    assert!(parse(&deep).is_err());
}

/// Aerospike CE 8.1.2 refuses an ill-typed expression when it builds it (PARAMETER_ERROR),
/// before any record is read: the peer suite's `*_neg` arithmetic tests expect 4, not 27.
#[test]
fn ill_typed_expressions_are_refused_at_build() {
    let int_bin = [0x93, 0x51, 0x02, 0xa1, b'a'];
    let float_bin = [0x93, 0x51, 0x07, 0xa1, b'f'];
    // Eq(Add(IntBin('a'), 5.0), 10): an int plus a float.
    let mut e = vec![0x93, 0x01, 0x93, 0x14];
    e.extend(int_bin);
    e.extend([0xcb, 0x40, 0x14, 0, 0, 0, 0, 0, 0, 0x0a]);
    assert_eq!(parse_filter(&e).unwrap_err().result_code(), 4);
    // Eq(IntBin('a'), 'x'): an int compared with a string.
    let mut e = vec![0x93, 0x01];
    e.extend(int_bin);
    e.extend([0xa2, 0x03, b'x']);
    assert_eq!(parse_filter(&e).unwrap_err().result_code(), 4);
    // Not(IntBin('a')), Floor(IntBin('a')) and ToFloat(FloatBin('f')).
    for (op, arg) in [(0x12, &int_bin), (0x1c, &int_bin), (0x1f, &float_bin)] {
        let mut e = vec![0x92, op];
        e.extend(arg.iter());
        assert_eq!(parse(&e).unwrap_err().result_code(), 4, "op {op}");
    }
    // A filter must be boolean: IntBin('a') alone is refused, Add(IntBin('a'), 1) builds.
    assert_eq!(parse_filter(&int_bin).unwrap_err().result_code(), 4);
    let mut e = vec![0x93, 0x14];
    e.extend(int_bin);
    e.push(0x01);
    assert!(parse(&e).is_ok());
}

#[test]
fn let_variables_are_typed_and_scoped() {
    // Let(Def('x', 1), Eq(Var('x'), 'a')): x is an int, compared with a string.
    let e = [
        0x94, 0x7d, 0xa1, b'x', 0x01, 0x93, 0x01, 0x92, 0x7c, 0xa1, b'x', 0xa2, 0x03, b'a',
    ];
    assert_eq!(parse(&e).unwrap_err().result_code(), 4);
    // Let(Def('1x', 1), true): a name must start with a letter or '_'.
    let e = [0x94, 0x7d, 0xa2, b'1', b'x', 0x01, 0xc3];
    assert_eq!(parse(&e).unwrap_err().result_code(), 4);
    // Let(Def('x', Var('x')), true): used while being defined.
    let e = [0x94, 0x7d, 0xa1, b'x', 0x92, 0x7c, 0xa1, b'x', 0xc3];
    assert_eq!(parse(&e).unwrap_err().result_code(), 4);
}

#[test]
fn cond_actions_share_one_type_but_unknown_fits_any() {
    // Cond(true, 1, 'a'): an int action and a string default.
    let e = [0x94, 0x7b, 0xc3, 0x01, 0xa2, 0x03, b'a'];
    assert_eq!(parse(&e).unwrap_err().result_code(), 4);
    // Cond(true, 1, Unknown()) builds, and is 1.
    let e = [0x94, 0x7b, 0xc3, 0x01, 0x91, 0x00];
    let v = evaluate(&parse(&e).unwrap(), &rec()).unwrap();
    assert_eq!(v.unwrap().as_int(), Some(1));
}

/// A call's op arguments are expressions: a literal list arrives quoted ([126, [...]]) and an
/// argument may read a bin. ListExp.get_by_value_list(VALUE, [2, 3], ListBin('l')) = [2, 3].
#[test]
fn call_arguments_are_expressions() {
    // [127, 4, 0, [23, 7, [126, [2, 3]]], [81, 4, 'l']]
    let e = [
        0x95, 0x7f, 0x04, 0x00, 0x93, 0x17, 0x07, 0x92, 0x7e, 0x92, 0x02, 0x03, 0x93, 0x51, 0x04,
        0xa1, b'l',
    ];
    let v = evaluate(&parse(&e).unwrap(), &rec()).unwrap().unwrap();
    let Value::List(l) = v else {
        panic!("not a list: {v:?}")
    };
    let got: Vec<i64> = l.items.iter().filter_map(Value::as_int).collect();
    assert_eq!(got, [2, 3]);
    // ListExp.get_by_index(VALUE, INT, Sub(IntBin('a'), 7), ListBin('l')) = l[1] = 2.
    let e = [
        0x95, 0x7f, 0x02, 0x00, 0x93, 0x13, 0x07, 0x93, 0x15, 0x93, 0x51, 0x02, 0xa1, b'a', 0x07,
        0x93, 0x51, 0x04, 0xa1, b'l',
    ];
    let v = evaluate(&parse(&e).unwrap(), &rec()).unwrap();
    assert_eq!(v.unwrap().as_int(), Some(2));
}

/// Aerospike CE 8.1.2: a call that fails on the record (here a bounded insert past the end)
/// makes the expression unknown; the command then answers 26 or filters the record out.
#[test]
fn a_failing_call_is_unknown() {
    // ListExp.size(ListExp.insert({write_flags: INSERT_BOUNDED}, 100, 5, ListBin('l'))):
    // [127, 2, 0, [16], [127, 4, 0x40, [3, 100, 5, 2], [81, 4, 'l']]]
    let e = [
        0x95, 0x7f, 0x02, 0x00, 0x91, 0x10, 0x95, 0x7f, 0x04, 0x40, 0x94, 0x03, 0x64, 0x05, 0x02,
        0x93, 0x51, 0x04, 0xa1, b'l',
    ];
    assert!(evaluate(&parse(&e).unwrap(), &rec()).unwrap().is_none());
    // Unbounded, the same insert pads with nils: 101 items.
    let mut unbounded = e;
    unbounded[14] = 0x00;
    let v = evaluate(&parse(&unbounded).unwrap(), &rec()).unwrap();
    assert_eq!(v.unwrap().as_int(), Some(101));
}
