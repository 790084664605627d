//! A unit of work as one transaction: the fencing check first (the lease row is share-locked
//! until commit, so the shard cannot change hands mid-unit), then the entity changes, the
//! outbox rows and last the events (their sequence lock is held as briefly as possible). Any
//! failed precondition rolls the whole transaction back.

use super::{db, event_log, lease};
use crate::storage::{Change, CustomerAlias, Result, StorageError, UnitOfWork};
use protocol::{codec, OutboxMessage};
use sqlx::postgres::PgConnection;
use sqlx::PgPool;

/// Commits `unit`; answers the last event sequence it appended, if it appended any.
pub(super) async fn commit(pool: &PgPool, unit: &UnitOfWork) -> Result<Option<u64>> {
    let mut tx = pool.begin().await.map_err(db)?;
    match apply(&mut tx, unit).await {
        Ok(last) => {
            tx.commit().await.map_err(db)?;
            Ok(last)
        }
        Err(e) => {
            // Dropping the transaction rolls it back too; rolling back here frees the locks now.
            if let Err(rollback) = tx.rollback().await {
                tracing::warn!(error = %rollback, "rolling back a failed unit of work");
            }
            Err(e)
        }
    }
}

async fn apply(conn: &mut PgConnection, unit: &UnitOfWork) -> Result<Option<u64>> {
    if let Some(token) = unit.fence {
        lease::check(conn, token).await?;
    }
    for change in &unit.changes {
        apply_change(conn, change).await?;
    }
    for message in &unit.outbox {
        queue(conn, message).await?;
    }
    event_log::append_in(conn, &unit.events).await
}

/// Runs a statement with its binds; answers the rows it touched.
macro_rules! exec {
    ($conn:expr, $sql:expr $(, $bind:expr)* $(,)?) => {
        sqlx::query($sql)
            $(.bind($bind))*
            .execute(&mut *$conn)
            .await
            .map_err(db)
            .map(|r| r.rows_affected())
    };
}

fn id(ulid: ulid::Ulid) -> Vec<u8> {
    ulid.0.to_be_bytes().to_vec()
}

async fn apply_change(conn: &mut PgConnection, change: &Change) -> Result<()> {
    match change {
        Change::PutBasket(b) => {
            exec!(
                conn,
                "INSERT INTO baskets (id, value) VALUES ($1, $2) \
                 ON CONFLICT (id) DO UPDATE SET value = EXCLUDED.value",
                b.id.to_bytes().to_vec(),
                codec::encode(b)?,
            )?;
        }
        Change::PutBasketToken { token_hash, basket } => {
            exec!(
                conn,
                "INSERT INTO basket_tokens (token_hash, basket) VALUES ($1, $2) \
                 ON CONFLICT (token_hash) DO UPDATE SET basket = EXCLUDED.basket",
                token_hash.to_vec(),
                basket.to_bytes().to_vec(),
            )?;
        }
        Change::PutCustomer(c) => {
            exec!(
                conn,
                "INSERT INTO customers (id, value) VALUES ($1, $2) \
                 ON CONFLICT (id) DO UPDATE SET value = EXCLUDED.value",
                c.id.to_bytes().to_vec(),
                codec::encode(c)?,
            )?;
        }
        Change::ClaimEmail { email, customer } => {
            let claimed = exec!(
                conn,
                "INSERT INTO customer_emails (email, customer) VALUES ($1, $2) \
                 ON CONFLICT (email) DO NOTHING",
                email.as_str(),
                customer.to_bytes().to_vec(),
            )?;
            if claimed == 0 {
                return Err(StorageError::Conflict(format!(
                    "email {email} is already registered"
                )));
            }
        }
        Change::ClaimAlias { alias, customer } => {
            // Idempotent for the same customer: the update applies only to its own claim.
            let claimed = exec!(
                conn,
                "INSERT INTO customer_aliases AS a (alias, customer) VALUES ($1, $2) \
                 ON CONFLICT (alias) DO UPDATE SET customer = EXCLUDED.customer \
                 WHERE a.customer = EXCLUDED.customer",
                alias.key_bytes(),
                customer.to_bytes().to_vec(),
            )?;
            if claimed == 0 {
                let what = match alias {
                    CustomerAlias::Phone(_) => "phone number",
                    CustomerAlias::Loyalty(_) => "loyalty number",
                };
                return Err(StorageError::Conflict(format!(
                    "this {what} belongs to another customer"
                )));
            }
        }
        Change::ReleaseAlias(alias) => {
            exec!(
                conn,
                "DELETE FROM customer_aliases WHERE alias = $1",
                alias.key_bytes()
            )?;
        }
        Change::ReleaseEmail(email) => {
            exec!(
                conn,
                "DELETE FROM customer_emails WHERE email = $1",
                email.as_str()
            )?;
        }
        Change::PutSession {
            token_hash,
            session,
        } => {
            exec!(
                conn,
                "INSERT INTO sessions (token_hash, customer, value) VALUES ($1, $2, $3) \
                 ON CONFLICT (token_hash) DO UPDATE \
                 SET customer = EXCLUDED.customer, value = EXCLUDED.value",
                token_hash.to_vec(),
                session.customer.to_bytes().to_vec(),
                codec::encode(session)?,
            )?;
        }
        Change::DeleteSession { token_hash } => {
            exec!(
                conn,
                "DELETE FROM sessions WHERE token_hash = $1",
                token_hash.to_vec()
            )?;
        }
        Change::PutStock(level) => {
            exec!(
                conn,
                "INSERT INTO stock (location, sku, value) VALUES ($1, $2, $3) \
                 ON CONFLICT (location, sku) DO UPDATE SET value = EXCLUDED.value",
                level.location.0.as_str(),
                level.sku.as_str(),
                codec::encode(level)?,
            )?;
        }
        Change::SwapStock { expected, level } => {
            let swapped = match expected {
                Some(expected) => exec!(
                    conn,
                    "UPDATE stock SET value = $3 WHERE location = $1 AND sku = $2 AND value = $4",
                    level.location.0.as_str(),
                    level.sku.as_str(),
                    codec::encode(level)?,
                    codec::encode(expected)?,
                )?,
                None => exec!(
                    conn,
                    "INSERT INTO stock (location, sku, value) VALUES ($1, $2, $3) \
                     ON CONFLICT (location, sku) DO NOTHING",
                    level.location.0.as_str(),
                    level.sku.as_str(),
                    codec::encode(level)?,
                )?,
            };
            if swapped == 0 {
                return Err(StorageError::Conflict(format!(
                    "the stock of {} at {} was changed by another node",
                    level.sku, level.location.0
                )));
            }
        }
        Change::PutCategory(c) => {
            exec!(
                conn,
                "INSERT INTO categories (id, value) VALUES ($1, $2) \
                 ON CONFLICT (id) DO UPDATE SET value = EXCLUDED.value",
                c.id.0.as_str(),
                codec::encode(c)?,
            )?;
        }
        Change::PutProduct(p) => {
            exec!(
                conn,
                "INSERT INTO products (id, value) VALUES ($1, $2) \
                 ON CONFLICT (id) DO UPDATE SET value = EXCLUDED.value",
                p.id.to_bytes().to_vec(),
                codec::encode(p)?,
            )?;
        }
        Change::DeleteProduct(pid) => {
            exec!(
                conn,
                "DELETE FROM products WHERE id = $1",
                pid.to_bytes().to_vec()
            )?;
        }
        Change::PutCheckout(c) => {
            exec!(
                conn,
                "INSERT INTO checkouts (id, open, value) VALUES ($1, $2, $3) \
                 ON CONFLICT (id) DO UPDATE SET open = EXCLUDED.open, value = EXCLUDED.value",
                c.id.to_bytes().to_vec(),
                c.state.is_open(),
                codec::encode(c)?,
            )?;
        }
        Change::PutHold(h) => {
            exec!(
                conn,
                "INSERT INTO holds (checkout, location, sku, value) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (checkout, location, sku) DO UPDATE SET value = EXCLUDED.value",
                h.checkout.to_bytes().to_vec(),
                h.location.0.as_str(),
                h.sku.as_str(),
                codec::encode(h)?,
            )?;
        }
        Change::DeleteHold {
            checkout,
            sku,
            location,
        } => {
            exec!(
                conn,
                "DELETE FROM holds WHERE checkout = $1 AND location = $2 AND sku = $3",
                checkout.to_bytes().to_vec(),
                location.0.as_str(),
                sku.as_str(),
            )?;
        }
        Change::CreateOrder(o) => {
            let claimed = exec!(
                conn,
                "INSERT INTO checkout_orders (checkout, order_id) VALUES ($1, $2) \
                 ON CONFLICT (checkout) DO NOTHING",
                o.checkout.to_bytes().to_vec(),
                o.id.to_bytes().to_vec(),
            )?;
            if claimed == 0 {
                return Err(StorageError::Conflict(format!(
                    "checkout {} already has an order",
                    o.checkout
                )));
            }
            put_order(conn, o).await?;
        }
        Change::PutOrder(o) => put_order(conn, o).await?,
        Change::MarkWebhookEvent(event) => {
            exec!(
                conn,
                "INSERT INTO webhook_events (id) VALUES ($1) ON CONFLICT DO NOTHING",
                event.as_str()
            )?;
        }
        Change::PutImportMarks(m) => {
            exec!(
                conn,
                "INSERT INTO import_marks (id, value) VALUES ($1, $2) \
                 ON CONFLICT (id) DO UPDATE SET value = EXCLUDED.value",
                id(m.id),
                codec::encode(m)?,
            )?;
        }
        Change::AckOutbox {
            destination,
            id: message,
        } => {
            exec!(
                conn,
                "DELETE FROM outbox WHERE destination = $1 AND id = $2",
                destination.as_str(),
                id(*message),
            )?;
        }
        Change::PutOutbox(m) => put_outbox(conn, false, m).await?,
        Change::DeadLetter(m) => {
            exec!(
                conn,
                "DELETE FROM outbox WHERE destination = $1 AND id = $2",
                m.destination.as_str(),
                id(m.id),
            )?;
            put_outbox(conn, true, m).await?;
        }
        Change::RetryDeadLetter(m) => {
            exec!(
                conn,
                "DELETE FROM outbox_dead WHERE destination = $1 AND id = $2",
                m.destination.as_str(),
                id(m.id),
            )?;
            put_outbox(conn, false, m).await?;
        }
        Change::DiscardDeadLetter {
            destination,
            id: message,
        } => {
            exec!(
                conn,
                "DELETE FROM outbox_dead WHERE destination = $1 AND id = $2",
                destination.as_str(),
                id(*message),
            )?;
        }
        Change::OAuth(change) => super::oauth::apply(conn, change).await?,
        Change::MarkErased {
            customer,
            pseudonym,
        } => {
            exec!(
                conn,
                "INSERT INTO erased (customer, pseudonym) VALUES ($1, $2) \
                 ON CONFLICT (customer) DO UPDATE SET pseudonym = EXCLUDED.pseudonym",
                customer.to_bytes().to_vec(),
                pseudonym.to_bytes().to_vec(),
            )?;
        }
        Change::PutPendingReminder(r) => {
            exec!(
                conn,
                "INSERT INTO pending_reminders (customer, value) VALUES ($1, $2) \
                 ON CONFLICT (customer) DO UPDATE SET value = EXCLUDED.value",
                r.customer.to_bytes().to_vec(),
                codec::encode(r)?,
            )?;
        }
    }
    Ok(())
}

async fn put_order(conn: &mut PgConnection, o: &protocol::order::OrderRecord) -> Result<()> {
    exec!(
        conn,
        "INSERT INTO orders (id, number, customer, owes, value) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (id) DO UPDATE SET number = EXCLUDED.number, \
         customer = EXCLUDED.customer, owes = EXCLUDED.owes, value = EXCLUDED.value",
        o.id.to_bytes().to_vec(),
        o.number.as_str(),
        o.customer.map(|c| c.to_bytes().to_vec()),
        o.owes(),
        codec::encode(o)?,
    )?;
    Ok(())
}

/// Stores a message as pending (`outbox`) or as a dead letter (`outbox_dead`).
async fn put_outbox(conn: &mut PgConnection, dead: bool, m: &OutboxMessage) -> Result<()> {
    let sql = match dead {
        false => {
            "INSERT INTO outbox (destination, id, value) VALUES ($1, $2, $3) \
             ON CONFLICT (destination, id) DO UPDATE SET value = EXCLUDED.value"
        }
        true => {
            "INSERT INTO outbox_dead (destination, id, value) VALUES ($1, $2, $3) \
             ON CONFLICT (destination, id) DO UPDATE SET value = EXCLUDED.value"
        }
    };
    exec!(
        conn,
        sql,
        m.destination.as_str(),
        id(m.id),
        codec::encode(m)?
    )?;
    Ok(())
}

/// Queues a message of the unit; one whose key was queued before is left out (not an error:
/// the unit's other changes stand).
async fn queue(conn: &mut PgConnection, m: &OutboxMessage) -> Result<()> {
    if !m.key.is_empty() {
        let first = exec!(
            conn,
            "INSERT INTO outbox_keys (key, id) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            m.key.as_str(),
            id(m.id),
        )?;
        if first == 0 {
            return Ok(());
        }
    }
    put_outbox(conn, false, m).await
}
