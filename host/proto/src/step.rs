//! A unit's steps on the wire: [`Step`] and its [`Arg`]s as [`v1::Step`] and
//! [`v1::StepArg`], literals encoded as [`v1::Value`]s. From the wire everything is
//! checked: a step without a component or an argument without a kind is an error.

use std::sync::Arc;

use fabric_core::{Arg, BulkKind, Step};

use crate::error::ProtoError;
use crate::v1;
use crate::v1::step_arg::Arg as Kind;
use crate::value::{decode_value, encode_value};

/// `BulkKind` as its wire number (see `StepArgList.bulk`).
fn bulk_number(kind: Option<BulkKind>) -> u32 {
    match kind {
        None => 0,
        Some(BulkKind::U8) => 1,
        Some(BulkKind::S32) => 2,
        Some(BulkKind::U32) => 3,
        Some(BulkKind::S64) => 4,
        Some(BulkKind::U64) => 5,
        Some(BulkKind::F32) => 6,
        Some(BulkKind::F64) => 7,
    }
}

fn bulk_kind(n: u32) -> Result<Option<BulkKind>, ProtoError> {
    Ok(Some(match n {
        0 => return Ok(None),
        1 => BulkKind::U8,
        2 => BulkKind::S32,
        3 => BulkKind::U32,
        4 => BulkKind::S64,
        5 => BulkKind::U64,
        6 => BulkKind::F32,
        7 => BulkKind::F64,
        other => {
            return Err(ProtoError::invalid(
                "StepArgList",
                format!("`bulk` is {other}, not a known element kind"),
            ));
        }
    }))
}

impl From<&Arg> for v1::StepArg {
    fn from(arg: &Arg) -> v1::StepArg {
        let boxed = |a: &Arg| Box::new(v1::StepArg::from(a));
        let all = |items: &[Arg]| items.iter().map(v1::StepArg::from).collect();
        let kind = match arg {
            Arg::Value(v) => Kind::Value(encode_value(v)),
            Arg::Ref(t) => Kind::Task(*t),
            Arg::External(x) => Kind::External(*x),
            Arg::List(kind, items) => Kind::List(v1::StepArgList {
                bulk: bulk_number(*kind),
                items: all(items),
            }),
            Arg::Tuple(items) => Kind::Tuple(v1::StepArgs { items: all(items) }),
            Arg::Record(fields) => Kind::Record(v1::StepArgRecord {
                names: fields.iter().map(|(n, _)| n.to_string()).collect(),
                values: fields.iter().map(|(_, a)| v1::StepArg::from(a)).collect(),
            }),
            Arg::Some(a) => Kind::Some(boxed(a)),
            Arg::Variant(case, a) => Kind::Variant(Box::new(v1::StepArgCase {
                name: case.to_string(),
                value: Some(boxed(a)),
            })),
            Arg::Ok(a) => Kind::Ok(boxed(a)),
            Arg::Err(a) => Kind::Err(boxed(a)),
        };
        v1::StepArg { arg: Some(kind) }
    }
}

impl TryFrom<v1::StepArg> for Arg {
    type Error = ProtoError;

    fn try_from(arg: v1::StepArg) -> Result<Arg, ProtoError> {
        let inner = |a: Box<v1::StepArg>| Arg::try_from(*a).map(Box::new);
        let all = |items: Vec<v1::StepArg>| {
            items
                .into_iter()
                .map(Arg::try_from)
                .collect::<Result<Box<[Arg]>, _>>()
        };
        Ok(
            match arg.arg.ok_or(ProtoError::missing("StepArg", "arg"))? {
                Kind::Value(bytes) => Arg::Value(decode_value(bytes)?),
                Kind::Task(t) => Arg::Ref(t),
                Kind::External(x) => Arg::External(x),
                Kind::List(list) => Arg::List(bulk_kind(list.bulk)?, all(list.items)?),
                Kind::Tuple(tuple) => Arg::Tuple(all(tuple.items)?),
                Kind::Record(record) => {
                    if record.names.len() != record.values.len() {
                        return Err(ProtoError::invalid(
                            "StepArgRecord",
                            format!(
                                "{} names for {} values",
                                record.names.len(),
                                record.values.len()
                            ),
                        ));
                    }
                    let values = all(record.values)?;
                    Arg::Record(
                        record
                            .names
                            .into_iter()
                            .map(Arc::from)
                            .zip(values)
                            .collect(),
                    )
                }
                Kind::Some(a) => Arg::Some(inner(a)?),
                Kind::Variant(case) => {
                    let value = case
                        .value
                        .ok_or(ProtoError::missing("StepArgCase", "value"))?;
                    Arg::Variant(case.name.into(), inner(value)?)
                }
                Kind::Ok(a) => Arg::Ok(inner(a)?),
                Kind::Err(a) => Arg::Err(inner(a)?),
            },
        )
    }
}

impl From<&Step> for v1::Step {
    fn from(step: &Step) -> v1::Step {
        v1::Step {
            task: step.task,
            id: step.id.to_string(),
            component: step.component.to_string(),
            export: step.export.to_string(),
            args: step.args.iter().map(v1::StepArg::from).collect(),
            timeout_ms: step.timeout_ms.unwrap_or(0),
            memory_mib: step.memory_mib.unwrap_or(0),
        }
    }
}

impl TryFrom<v1::Step> for Step {
    type Error = ProtoError;

    fn try_from(step: v1::Step) -> Result<Step, ProtoError> {
        if step.component.is_empty() {
            return Err(ProtoError::missing("Step", "component"));
        }
        if step.export.is_empty() {
            return Err(ProtoError::missing("Step", "export"));
        }
        Ok(Step {
            task: step.task,
            id: step.id.into(),
            component: step.component.into(),
            export: step.export.into(),
            args: step
                .args
                .into_iter()
                .map(Arg::try_from)
                .collect::<Result<_, _>>()?,
            timeout_ms: (step.timeout_ms > 0).then_some(step.timeout_ms),
            memory_mib: (step.memory_mib > 0).then_some(step.memory_mib),
        })
    }
}

#[cfg(test)]
mod tests {
    use fabric_core::Value;
    use prost::Message;

    use super::*;

    fn roundtrip(step: &Step) -> Step {
        let bytes = v1::Step::from(step).encode_to_vec();
        Step::try_from(v1::Step::decode(&bytes[..]).unwrap()).unwrap()
    }

    #[test]
    fn steps_cross_the_wire_unchanged() {
        let args: Box<[Arg]> = Box::new([
            Arg::Value(Value::S64(7)),
            Arg::Ref(3),
            Arg::External(1),
            Arg::List(
                Some(BulkKind::F64),
                Box::new([Arg::Ref(2), Arg::Value(Value::F64(1.5))]),
            ),
            Arg::List(None, Box::new([Arg::Value(Value::String("x".into()))])),
            Arg::Tuple(Box::new([Arg::Ref(4), Arg::Value(Value::Bool(true))])),
            Arg::Record(Box::new([
                ("a".into(), Arg::Ref(5)),
                ("b".into(), Arg::External(0)),
            ])),
            Arg::Some(Box::new(Arg::Ref(6))),
            Arg::Variant("case".into(), Box::new(Arg::Ref(7))),
            Arg::Ok(Box::new(Arg::Ref(8))),
            Arg::Err(Box::new(Arg::Value(Value::String("why".into())))),
        ]);
        let step = Step {
            task: 9,
            id: "sum-1".into(),
            component: "builtin:array".into(),
            export: "sum".into(),
            args,
            timeout_ms: Some(1500),
            memory_mib: None,
        };
        assert_eq!(roundtrip(&step), step);
    }

    #[test]
    fn malformed_steps_are_refused() {
        let no_component = v1::Step {
            export: "inc".into(),
            ..v1::Step::default()
        };
        assert!(Step::try_from(no_component).is_err());
        let empty_arg = v1::Step {
            component: "c".into(),
            export: "inc".into(),
            args: vec![v1::StepArg { arg: None }],
            ..v1::Step::default()
        };
        let e = Step::try_from(empty_arg).unwrap_err();
        assert!(e.to_string().contains("`arg` is missing"), "{e}");
        let bad_record = v1::StepArg {
            arg: Some(Kind::Record(v1::StepArgRecord {
                names: vec!["a".into(), "b".into()],
                values: vec![],
            })),
        };
        assert!(Arg::try_from(bad_record).is_err());
        let bad_bulk = v1::StepArg {
            arg: Some(Kind::List(v1::StepArgList {
                bulk: 99,
                items: vec![],
            })),
        };
        assert!(Arg::try_from(bad_bulk).is_err());
    }
}
