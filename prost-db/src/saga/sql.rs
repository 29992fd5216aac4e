//! The SQL of one store, built once from quoted names, and the decoding of its rows.

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use sqlx::types::Json;
use uuid::Uuid;

use super::{CompensationRecord, Saga, SagaError, SagaTables};

/// The statements of one store, built once from validated, quoted names.
#[derive(Debug)]
pub(super) struct Statements {
    pub(super) insert: String,
    pub(super) insert_linked: String,
    pub(super) select: String,
    pub(super) update: String,
    pub(super) lock_expired: String,
    pub(super) count: String,
    pub(super) register: String,
    pub(super) request: String,
    pub(super) complete: String,
    pub(super) discard: String,
    pub(super) list: String,
}

const SAGA_COLUMNS: &str = "id, correlation_id, saga_type, status, version, payload, \
                            created_at, updated_at, expires_at, expires_at <= now() AS expired";
const COMPENSATION_COLUMNS: &str = "compensation_key, compensation_event, compensation_payload, \
                                    status, created_at, completed_at";

impl Statements {
    pub(super) fn new(tables: &SagaTables) -> Self {
        let states = tables.states_name();
        let comp = tables.compensations_name();
        let links: String = tables.links.iter().map(|l| format!(", {l}")).collect();
        let from_saga: String = tables.links.iter().map(|l| format!(", s.{l}")).collect();
        let from_record: String = tables.links.iter().map(|l| format!(", r.{l}")).collect();
        let returning_new = "RETURNING id, created_at, updated_at, expires_at, expires_at <= now()";
        Statements {
            insert: format!(
                "INSERT INTO {states} (correlation_id, saga_type, status, payload, expires_at, version) \
                 VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5), 0) \
                 ON CONFLICT (correlation_id) DO NOTHING {returning_new}"
            ),
            insert_linked: format!(
                "INSERT INTO {states} (correlation_id, saga_type, status, payload, expires_at, version{links}) \
                 SELECT $1, $2, $3, $4, now() + make_interval(secs => $5), 0{from_record} \
                 FROM jsonb_populate_record(NULL::{states}, $6) AS r \
                 ON CONFLICT (correlation_id) DO NOTHING {returning_new}"
            ),
            select: format!(
                "SELECT {SAGA_COLUMNS} FROM {states} WHERE correlation_id = $1 AND saga_type = $2"
            ),
            update: format!(
                "UPDATE {states} SET status = $3, payload = $4, expires_at = $5, \
                 version = version + 1, updated_at = now() \
                 WHERE correlation_id = $1 AND version = $2 \
                 RETURNING version, updated_at, expires_at <= now()"
            ),
            lock_expired: format!(
                "SELECT {SAGA_COLUMNS} FROM {states} \
                 WHERE saga_type = $1 AND status = ANY($2) AND expires_at <= now() \
                 AND correlation_id <> ALL($4) \
                 ORDER BY expires_at LIMIT $3 FOR UPDATE SKIP LOCKED"
            ),
            count: format!(
                "SELECT status::text, count(*) FROM {states} WHERE saga_type = $1 \
                 GROUP BY status ORDER BY status"
            ),
            register: format!(
                "INSERT INTO {comp} (saga_correlation_id, compensation_key, compensation_event, \
                 compensation_payload, status, created_at{links}) \
                 SELECT s.correlation_id, $2, $3, $4, 'pending', clock_timestamp(){from_saga} \
                 FROM {states} s WHERE s.correlation_id = $1 \
                 ON CONFLICT (saga_correlation_id, compensation_key) DO NOTHING RETURNING 1"
            ),
            request: format!(
                "UPDATE {comp} SET status = 'requested' \
                 WHERE saga_correlation_id = $1 AND status = 'pending' \
                 RETURNING {COMPENSATION_COLUMNS}"
            ),
            complete: format!(
                "INSERT INTO {comp} AS c (saga_correlation_id, compensation_key, compensation_event, \
                 compensation_payload, status, created_at, completed_at{links}) \
                 SELECT s.correlation_id, $2, $3, $4, 'completed', clock_timestamp(), clock_timestamp(){from_saga} \
                 FROM {states} s WHERE s.correlation_id = $1 \
                 ON CONFLICT (saga_correlation_id, compensation_key) DO UPDATE \
                 SET status = 'completed', completed_at = clock_timestamp() \
                 WHERE c.status <> 'completed' RETURNING 1"
            ),
            discard: format!(
                "UPDATE {comp} SET status = 'discarded', completed_at = clock_timestamp() \
                 WHERE saga_correlation_id = $1 AND status = 'pending'"
            ),
            list: format!(
                "SELECT {COMPENSATION_COLUMNS} FROM {comp} WHERE saga_correlation_id = $1 \
                 ORDER BY created_at DESC"
            ),
        }
    }
}

pub(super) type SagaRow = (
    Uuid,
    Uuid,
    String,
    String,
    i64,
    Json<serde_json::Value>,
    DateTime<Utc>,
    DateTime<Utc>,
    DateTime<Utc>,
    bool,
);

pub(super) type CompensationRow = (
    Option<String>,
    String,
    Json<serde_json::Value>,
    String,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
);

pub(super) fn decode_saga<P: DeserializeOwned>(row: SagaRow) -> Result<Saga<P>, SagaError> {
    let (
        id,
        correlation_id,
        saga_type,
        status,
        version,
        Json(payload),
        created_at,
        updated_at,
        expires_at,
        expired,
    ) = row;
    let payload = serde_json::from_value(payload).map_err(|source| SagaError::Payload {
        correlation_id,
        source,
    })?;
    Ok(Saga {
        id,
        correlation_id,
        saga_type,
        status,
        version,
        payload,
        created_at,
        updated_at,
        expires_at,
        expired,
    })
}

pub(super) fn decode_compensation(row: CompensationRow) -> Result<CompensationRecord, SagaError> {
    let (key, event, Json(payload), status, created_at, completed_at) = row;
    let status = status.parse().map_err(|reason: String| {
        SagaError::from(crate::Error::Database(sqlx::Error::Decode(reason.into())))
    })?;
    Ok(CompensationRecord {
        key: key.unwrap_or_default(),
        event,
        payload,
        status,
        created_at,
        completed_at,
    })
}
