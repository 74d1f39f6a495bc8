//! Subject naming: which registry subject a topic's key or value schema lives
//! under. The three strategies Confluent's serializers offer, with the same
//! names, so a consumer configured the Confluent way finds Ferry's schemas.

use serde::Deserialize;

/// How a subject name is derived.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectNameStrategy {
    /// `<topic>-value` / `<topic>-key` (Confluent's default): one schema
    /// lineage per topic.
    #[default]
    TopicName,
    /// `<record full name>`: one lineage per record type, across topics.
    RecordName,
    /// `<topic>-<record full name>`: several record types in one topic.
    TopicRecordName,
}

/// Whether the schema is for the record key or value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Key,
    Value,
}

impl SubjectNameStrategy {
    /// The subject for `topic`'s key or value written with the record type
    /// `record` (its full name; `None` for a non-record schema, which only
    /// the topic strategy can name).
    pub fn subject(self, topic: &str, part: Part, record: Option<&str>) -> Result<String, String> {
        let suffix = match part {
            Part::Key => "key",
            Part::Value => "value",
        };
        match (self, record) {
            (Self::TopicName, _) => Ok(format!("{topic}-{suffix}")),
            (Self::RecordName, Some(r)) => Ok(r.to_owned()),
            (Self::TopicRecordName, Some(r)) => Ok(format!("{topic}-{r}")),
            (_, None) => Err(format!(
                "{self:?} needs a named (record, enum or fixed) schema; use topic_name for primitive schemas"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies_name_subjects_like_confluent() {
        let r = Some("io.ferry.normalized.Contact");
        let s = SubjectNameStrategy::TopicName;
        assert_eq!(
            s.subject("contacts", Part::Value, r).as_deref(),
            Ok("contacts-value")
        );
        assert_eq!(
            s.subject("contacts", Part::Key, None).as_deref(),
            Ok("contacts-key")
        );
        assert_eq!(
            SubjectNameStrategy::RecordName
                .subject("contacts", Part::Value, r)
                .as_deref(),
            Ok("io.ferry.normalized.Contact")
        );
        assert_eq!(
            SubjectNameStrategy::TopicRecordName
                .subject("contacts", Part::Value, r)
                .as_deref(),
            Ok("contacts-io.ferry.normalized.Contact")
        );
        assert!(SubjectNameStrategy::RecordName
            .subject("t", Part::Key, None)
            .is_err());
    }
}
