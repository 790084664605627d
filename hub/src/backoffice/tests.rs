//! Unit tests of the back office on an in-memory store and a manual clock.

use super::audit::Actor;
use super::coupons::{NewBatch, NewCoupon};
use super::promotions::{NewPromotion, PromotionPatch, PromotionRecord};
use super::store::MemoryStore;
use super::users::{NewUser, UserPatch};
use super::*;
use crate::clock::ManualClock;
use crate::import::{Row, RowOutcome};
use protocol::feed::FeedKind;
use protocol::{
    Category, CategoryId, Currency, CustomerId, Money, OrderId, Product, ProductId, Sku, Variant,
};
use serde_json::json;
use std::collections::BTreeMap;
use time::macros::datetime;

const T0: OffsetDateTime = datetime!(2026-03-01 09:00 UTC);

pub(super) struct Fixture {
    pub(super) bo: Arc<Backoffice>,
    clock: ManualClock,
}

fn product(sku: &str, price: i64) -> Product {
    Product {
        id: ProductId::new(),
        slug: sku.to_lowercase(),
        name: sku.into(),
        brand: "Test".into(),
        description: String::new(),
        category: CategoryId("coffee".into()),
        tax_rate_bp: 700,
        tax_class: "reduced".into(),
        image: String::new(),
        variants: vec![Variant {
            sku: Sku::parse(sku).expect("sku"),
            title: "500 g".into(),
            price: Money::new(price, Currency::EUR),
            compare_at: None,
            barcode: None,
            weight_grams: 500,
        }],
        attributes: Default::default(),
    }
}

pub(super) fn fixture() -> Fixture {
    fixture_on(Arc::new(MemoryStore::default()))
}

fn fixture_on(store: Arc<MemoryStore>) -> Fixture {
    let clock = ManualClock::new(T0);
    let catalog = protocol::CatalogSnapshot::new(
        1,
        vec![Category {
            id: CategoryId("coffee".into()),
            name: "Coffee".into(),
            description: String::new(),
            position: 1,
        }],
        vec![product("BEANS", 1299), product("TEA", 450)],
    );
    let bo = Backoffice::open(
        store,
        Arc::new(clock.clone()),
        Arc::new(ArcSwap::from_pointee(catalog)),
        BackofficeSettings::default(),
    )
    .expect("opens");
    Fixture { bo, clock }
}

fn actor(user: &users::UserView) -> Actor {
    Actor::User(BackOfficeUser {
        id: user.id,
        email: user.email.clone(),
        roles: user.roles.clone(),
    })
}

async fn user(bo: &Backoffice, email: &str, roles: &[&str]) -> Actor {
    let view = bo
        .create_user(
            &Actor::AdminToken,
            NewUser {
                email: email.into(),
                name: "Someone".into(),
                roles: roles.iter().map(|r| r.to_string()).collect(),
                password: None,
            },
        )
        .await
        .expect("user created");
    actor(&view)
}

fn ten_percent() -> serde_json::Value {
    json!({"benefit": {"type": "percent_off_basket", "percent_bp": 1000}})
}

fn new_promotion(id: &str, spec: serde_json::Value) -> NewPromotion {
    NewPromotion {
        id: id.into(),
        name: format!("Promotion {id}"),
        description: String::new(),
        spec,
        starts_at: None,
        ends_at: None,
    }
}

fn live_ids(bo: &Backoffice) -> Vec<String> {
    let ids = |ps: &[protocol::promotion::Promotion]| {
        ps.iter()
            .map(|p| p.id.to_string())
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(
        ids(bo.live().promotions()),
        ids(&bo.live_promotions()),
        "the set and the list hold the same promotions"
    );
    bo.live_promotions()
        .iter()
        .map(|p| p.id.to_string())
        .collect()
}

/// A live promotion `id` (drafted by a merchandiser, approved by an approver).
async fn live_promotion(f: &Fixture, id: &str) {
    let author = user(
        &f.bo,
        &format!("author-{id}@example.com"),
        &["merchandiser"],
    )
    .await;
    let approver = user(&f.bo, &format!("approver-{id}@example.com"), &["approver"]).await;
    f.bo.create_promotion(&author, new_promotion(id, ten_percent()))
        .await
        .expect("created");
    f.bo.approve_promotion(&approver, id)
        .await
        .expect("approved");
}

fn status(bo: &Backoffice, id: &str) -> Status {
    bo.promotion(id).expect("exists").status
}

#[test]
fn roles_parse_and_require() {
    assert_eq!("approver".parse::<Role>(), Ok(Role::Approver));
    assert!("owner".parse::<Role>().is_err());
    let user = BackOfficeUser {
        id: users::UserId(ulid::Ulid::new()),
        email: "m@example.com".into(),
        roles: [Role::Merchandiser, Role::Analyst].into(),
    };
    assert!(user.require(Role::Merchandiser).is_ok());
    assert!(user
        .require_any(&[Role::Marketer, Role::Merchandiser])
        .is_ok());
    match user.require(Role::Approver) {
        Err(BackofficeError::Forbidden { message, .. }) => {
            assert_eq!(message, "needs role approver")
        }
        other => panic!("expected a 403, got {other:?}"),
    }
    let admin_only = BackOfficeUser {
        roles: [Role::Admin].into(),
        ..user
    };
    assert!(
        admin_only.require(Role::Approver).is_err(),
        "admin implies no other role"
    );
}

#[actix_web::test]
async fn users_are_validated_and_unique() {
    let f = fixture();
    let bad =
        f.bo.create_user(
            &Actor::AdminToken,
            NewUser {
                email: "not-an-email".into(),
                name: " ".into(),
                roles: vec!["owner".into()],
                password: Some("short".into()),
            },
        )
        .await;
    match bad {
        Err(BackofficeError::Invalid(fields)) => {
            let names: Vec<&str> = fields.iter().map(|f| f.field.as_str()).collect();
            assert_eq!(names, ["email", "name", "roles", "password"]);
        }
        other => panic!("expected invalid fields, got {other:?}"),
    }
    assert!(f.bo.users().expect("users").is_empty(), "nothing stored");
    user(&f.bo, "Ana@Example.com", &["analyst"]).await;
    let again =
        f.bo.create_user(
            &Actor::AdminToken,
            NewUser {
                email: "ana@example.com".into(),
                name: "Ana".into(),
                roles: vec!["support".into()],
                password: None,
            },
        )
        .await;
    assert!(matches!(
        again,
        Err(BackofficeError::Conflict {
            code: "email_taken",
            ..
        })
    ));
}

#[actix_web::test]
async fn tokens_authenticate_until_revoked_or_disabled() {
    let f = fixture();
    let ana = user(&f.bo, "ana@example.com", &["merchandiser", "analyst"]).await;
    let Actor::User(ana) = ana else {
        panic!("a user")
    };
    let first =
        f.bo.issue_token(&Actor::AdminToken, ana.id, Some("laptop".into()))
            .await
            .expect("issued");
    let second =
        f.bo.issue_token(&Actor::AdminToken, ana.id, None)
            .await
            .expect("issued");
    assert_ne!(first.token, second.token);
    let who = f.bo.authenticate(&first.token).expect("valid token");
    assert_eq!(who, ana);
    assert!(f.bo.authenticate("bo_not-a-token").is_err());
    assert!(f.bo.authenticate("").is_err());

    f.bo.revoke_token(&Actor::AdminToken, ana.id, first.view.id)
        .await
        .expect("revoked");
    assert!(f.bo.authenticate(&first.token).is_err(), "revoked");
    assert!(
        f.bo.authenticate(&second.token).is_ok(),
        "the other still works"
    );
    let listed = f.bo.tokens(ana.id).expect("tokens");
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().any(|t| t.revoked_at.is_some()));

    f.bo.update_user(
        &Actor::AdminToken,
        ana.id,
        UserPatch {
            disabled: Some(true),
            ..UserPatch::default()
        },
    )
    .await
    .expect("disabled");
    assert!(f.bo.authenticate(&second.token).is_err(), "disabled user");
    f.bo.update_user(
        &Actor::AdminToken,
        ana.id,
        UserPatch {
            disabled: Some(false),
            ..UserPatch::default()
        },
    )
    .await
    .expect("enabled");
    assert!(f.bo.authenticate(&second.token).is_ok(), "enabled again");
}

#[actix_web::test]
async fn passwords_are_hashed_and_verified() {
    let f = fixture();
    let view =
        f.bo.create_user(
            &Actor::AdminToken,
            NewUser {
                email: "pw@example.com".into(),
                name: "Pat".into(),
                roles: vec!["support".into()],
                password: Some("correct horse battery".into()),
            },
        )
        .await
        .expect("created");
    assert!(view.has_password);
    let ok =
        f.bo.verify_password("PW@example.com", "correct horse battery")
            .await
            .expect("checked");
    assert_eq!(ok.map(|u| u.id), Some(view.id));
    assert!(f
        .bo
        .verify_password("pw@example.com", "wrong horse battery")
        .await
        .expect("checked")
        .is_none());
    assert!(f
        .bo
        .verify_password("nobody@example.com", "correct horse battery")
        .await
        .expect("checked")
        .is_none());
}

#[actix_web::test]
async fn changes_are_audited_with_before_and_after() {
    let f = fixture();
    let Actor::User(ana) = user(&f.bo, "ana@example.com", &["analyst"]).await else {
        panic!("a user")
    };
    f.bo.update_user(
        &Actor::AdminToken,
        ana.id,
        UserPatch {
            roles: Some(vec!["analyst".into(), "approver".into()]),
            ..UserPatch::default()
        },
    )
    .await
    .expect("updated");
    let entries = f.bo.audit(None, 100).expect("audit");
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].action, "user.create");
    assert_eq!(entries[0].who, "admin-token");
    assert_eq!(entries[0].before, None);
    let update = &entries[1];
    assert_eq!(update.action, "user.update");
    assert_eq!(update.seq, 2);
    let before: serde_json::Value =
        serde_json::from_str(update.before.as_deref().expect("before")).expect("json");
    let after: serde_json::Value =
        serde_json::from_str(update.after.as_deref().expect("after")).expect("json");
    assert_eq!(before["roles"], json!(["analyst"]));
    assert_eq!(after["roles"], json!(["analyst", "approver"]));
    assert!(
        update
            .after
            .as_deref()
            .is_some_and(|a| !a.contains("argon2")),
        "no secrets"
    );
    assert_eq!(f.bo.audit(Some(1), 100).expect("audit").len(), 1, "paged");
}

#[actix_web::test]
async fn the_author_cannot_approve_and_only_drafts_are_edited() {
    let f = fixture();
    let author = user(&f.bo, "m@example.com", &["merchandiser", "approver"]).await;
    let editor = user(&f.bo, "k@example.com", &["marketer", "approver"]).await;
    let approver = user(&f.bo, "a@example.com", &["approver"]).await;
    let created =
        f.bo.create_promotion(&author, new_promotion("SPRING", ten_percent()))
            .await
            .expect("created");
    assert_eq!(created.status, Status::Draft);
    assert_eq!(created.author, author.id());
    assert!(live_ids(&f.bo).is_empty(), "a draft is not live");

    let own = f.bo.approve_promotion(&author, "SPRING").await;
    match own {
        Err(BackofficeError::Forbidden { message, .. }) => {
            assert_eq!(message, "you cannot approve your own promotion")
        }
        other => panic!("expected a 403, got {other:?}"),
    }
    f.bo.edit_promotion(
        &editor,
        "SPRING",
        PromotionPatch {
            name: Some("Spring sale".into()),
            ..PromotionPatch::default()
        },
    )
    .await
    .expect("edited");
    assert!(
        f.bo.approve_promotion(&editor, "SPRING").await.is_err(),
        "an editor cannot approve either"
    );

    let version_before = f.bo.live_version();
    let approved =
        f.bo.approve_promotion(&approver, "SPRING")
            .await
            .expect("approved");
    assert_eq!(approved.status, Status::Active);
    assert_eq!(live_ids(&f.bo), ["SPRING"]);
    assert!(f.bo.live_version() > version_before, "version bumped");

    let edit =
        f.bo.edit_promotion(
            &author,
            "SPRING",
            PromotionPatch {
                name: Some("Too late".into()),
                ..PromotionPatch::default()
            },
        )
        .await;
    assert!(matches!(
        edit,
        Err(BackofficeError::Conflict {
            code: "not_draft",
            ..
        })
    ));
    assert!(matches!(
        f.bo.approve_promotion(&approver, "SPRING").await,
        Err(BackofficeError::Conflict {
            code: "not_draft",
            ..
        })
    ));

    let ended =
        f.bo.end_promotion(&approver, "SPRING")
            .await
            .expect("ended");
    assert_eq!(ended.status, Status::Ended);
    assert!(live_ids(&f.bo).is_empty());
    let actions: Vec<String> =
        f.bo.promotion("SPRING")
            .expect("found")
            .history
            .expect("history")
            .into_iter()
            .map(|h| h.action)
            .collect();
    assert_eq!(actions, ["created", "edited", "approved", "ended"]);
}

#[actix_web::test]
async fn the_clock_moves_scheduled_to_active_to_ended() {
    let f = fixture();
    let author = user(&f.bo, "m@example.com", &["merchandiser"]).await;
    let approver = user(&f.bo, "a@example.com", &["approver"]).await;
    let mut new = new_promotion("EASTER", ten_percent());
    new.starts_at = Some(T0 + time::Duration::hours(1));
    new.ends_at = Some(T0 + time::Duration::hours(3));
    f.bo.create_promotion(&author, new).await.expect("created");
    let approved =
        f.bo.approve_promotion(&approver, "EASTER")
            .await
            .expect("approved");
    assert_eq!(approved.status, Status::Scheduled);
    assert!(live_ids(&f.bo).is_empty());
    let v0 = f.bo.live_version();

    f.clock.advance(std::time::Duration::from_secs(3600));
    assert_eq!(status(&f.bo, "EASTER"), Status::Active);
    assert_eq!(live_ids(&f.bo), ["EASTER"], "live() follows the clock");
    let v1 = f.bo.live_version();
    assert!(v1 > v0);
    assert_eq!(
        f.bo.published().load().version,
        v1,
        "the published set was republished"
    );

    f.clock.advance(std::time::Duration::from_secs(2 * 3600));
    f.bo.refresh_if_due();
    assert_eq!(
        f.bo.published().load().promotions.len(),
        0,
        "the timer's refresh ends it"
    );
    assert_eq!(status(&f.bo, "EASTER"), Status::Ended);
    assert!(f.bo.live_version() > v1);
    let history: Vec<(String, String)> =
        f.bo.promotion("EASTER")
            .expect("found")
            .history
            .expect("history")
            .into_iter()
            .map(|h| (h.action, h.by))
            .collect();
    assert_eq!(
        history[2..],
        [
            ("started".to_string(), "clock".to_string()),
            ("ended".to_string(), "clock".to_string())
        ]
    );
    assert_eq!(
        f.bo.promotions(Some(Status::Ended)).expect("list").len(),
        1,
        "status filter"
    );
    assert!(f
        .bo
        .promotions(Some(Status::Active))
        .expect("list")
        .is_empty());
}

#[actix_web::test]
async fn invalid_specs_are_refused_with_reasons() {
    let f = fixture();
    let author = user(&f.bo, "m@example.com", &["merchandiser"]).await;
    let cases = [
        (
            json!({"benefit": {"type": "fixed_price", "target": {"type": "skus", "skus": ["BEANS"]}, "price": {"minor": -1, "currency": "EUR"}}}),
            "spec.benefit",
        ),
        (
            json!({"benefit": {"type": "percent_off", "target": {"type": "skus", "skus": ["NOPE"]}, "percent_bp": 1000}}),
            "spec.benefit",
        ),
        (
            json!({"benefit": {"type": "amount_off_each", "target": {"type": "skus", "skus": ["TEA"]}, "amount": {"minor": 500, "currency": "EUR"}}}),
            "spec.benefit",
        ),
        (json!({"benefit": {"type": "teleport"}}), "spec"),
    ];
    for (spec, field) in cases {
        match f
            .bo
            .create_promotion(&author, new_promotion("BAD", spec.clone()))
            .await
        {
            Err(BackofficeError::Invalid(fields)) => assert!(
                fields
                    .iter()
                    .any(|e| e.field.starts_with(field) && !e.message.is_empty()),
                "{spec}: {fields:?}"
            ),
            other => panic!("{spec}: expected invalid, got {other:?}"),
        }
    }
    assert!(
        f.bo.promotions(None).expect("list").is_empty(),
        "nothing stored"
    );
    let mut reversed = new_promotion("BAD", ten_percent());
    reversed.starts_at = Some(T0 + time::Duration::hours(2));
    reversed.ends_at = Some(T0);
    assert!(matches!(
        f.bo.create_promotion(&author, reversed).await,
        Err(BackofficeError::Invalid(fields)) if fields[0].field == "ends_at"
    ));
}

#[test]
fn promotion_records_round_trip_through_the_codec() {
    let spec: protocol::PromotionSpec = serde_json::from_value(json!({
        "conditions": [
            {"type": "min_subtotal", "amount": {"minor": 2000, "currency": "EUR"}},
            {"type": "window", "weekdays": ["monday"], "from_minute": 60, "until_minute": 120},
            {"type": "coupon"}
        ],
        "benefit": {"type": "buy_x_get_y", "buy": {"type": "all"}, "buy_quantity": 2, "get": {"type": "skus", "skus": ["TEA"]}, "get_quantity": 1, "percent_bp": 10000},
        "combination": {"type": "exclusive"},
        "priority": 3,
        "limits": {"per_order": 2}
    }))
    .expect("a spec");
    let record = PromotionRecord {
        id: protocol::PromotionId::parse("X.1").expect("id"),
        name: "x".into(),
        description: String::new(),
        spec,
        starts_at: Some(T0),
        ends_at: None,
        author: "erp".into(),
        editors: ["erp".to_string()].into(),
        approved: None,
        ended: None,
        created_at: T0,
        updated_at: T0,
        created_seq: 7,
        erp_version: Some(3),
        history: Vec::new(),
    };
    let bytes = protocol::codec::encode(&record).expect("encodes");
    assert_eq!(
        protocol::codec::decode::<PromotionRecord>(&bytes).expect("decodes"),
        record
    );
}

#[actix_web::test]
async fn public_coupons_count_limits_per_customer_and_in_total() {
    let f = fixture();
    live_promotion(&f, "WELCOME").await;
    let marketer = user(&f.bo, "k@example.com", &["marketer"]).await;
    f.bo.create_coupon(
        &marketer,
        "WELCOME",
        NewCoupon {
            code: "hello-10".into(),
            max_uses: Some(3),
            max_uses_per_customer: Some(1),
            expires_at: Some(T0 + time::Duration::days(1)),
        },
    )
    .await
    .expect("created");
    let (ana, bob, cy, dee) = (
        CustomerId::new(),
        CustomerId::new(),
        CustomerId::new(),
        CustomerId::new(),
    );
    let grant = f.bo.check(" Hello-10 ", Some(ana), T0).expect("valid");
    assert_eq!(grant.code, "HELLO-10");
    assert_eq!(grant.promotion.as_str(), "WELCOME");
    assert_eq!(
        f.bo.check("NOPE-99", Some(ana), T0),
        Err(CouponRefusal::Unknown)
    );
    assert_eq!(
        f.bo.check("HELLO-10", None, T0),
        Err(CouponRefusal::SignInRequired)
    );

    let order = OrderId::new();
    f.bo.redeem("hello-10", Some(ana), order)
        .await
        .expect("redeemed");
    f.bo.redeem("HELLO-10", Some(ana), order)
        .await
        .expect("the same order again is fine");
    assert_eq!(
        f.bo.check("HELLO-10", Some(ana), T0),
        Err(CouponRefusal::UsedUpForCustomer)
    );
    assert_eq!(
        f.bo.redeem("HELLO-10", Some(ana), OrderId::new()).await,
        Err(CouponRefusal::UsedUpForCustomer)
    );
    f.bo.redeem("HELLO-10", Some(bob), OrderId::new())
        .await
        .expect("bob");
    let cy_order = OrderId::new();
    f.bo.redeem("HELLO-10", Some(cy), cy_order)
        .await
        .expect("cy");
    assert_eq!(
        f.bo.check("HELLO-10", Some(dee), T0),
        Err(CouponRefusal::UsedUp),
        "three uses in total, the repeated order counted once"
    );

    assert!(f.bo.release("hello-10", cy_order).await.expect("released"));
    assert!(
        !f.bo.release("HELLO-10", cy_order).await.expect("released"),
        "once"
    );
    assert!(
        f.bo.check("HELLO-10", Some(dee), T0).is_ok(),
        "a use given back"
    );
    assert!(
        f.bo.check("HELLO-10", Some(cy), T0).is_ok(),
        "and cy's own use too"
    );

    assert_eq!(
        f.bo.check("HELLO-10", Some(dee), T0 + time::Duration::days(1)),
        Err(CouponRefusal::Expired)
    );
    f.clock.advance(std::time::Duration::from_secs(86_400));
    assert_eq!(
        f.bo.redeem("HELLO-10", Some(dee), OrderId::new()).await,
        Err(CouponRefusal::Expired),
        "redeem checks at the clock's now"
    );
}

#[actix_web::test]
async fn coupons_need_a_live_promotion() {
    let f = fixture();
    let author = user(&f.bo, "m@example.com", &["merchandiser"]).await;
    f.bo.create_promotion(&author, new_promotion("LATER", ten_percent()))
        .await
        .expect("created");
    f.bo.create_coupon(
        &author,
        "LATER",
        NewCoupon {
            code: "LATER-1".into(),
            max_uses: None,
            max_uses_per_customer: None,
            expires_at: None,
        },
    )
    .await
    .expect("a draft may get codes");
    assert_eq!(
        f.bo.check("later-1", None, T0),
        Err(CouponRefusal::PromotionNotLive)
    );
    assert!(matches!(
        f.bo.create_coupon(
            &author,
            "LATER",
            NewCoupon {
                code: "LATER-1".into(),
                max_uses: Some(0),
                max_uses_per_customer: None,
                expires_at: None,
            },
        )
        .await,
        Err(BackofficeError::Invalid(fields)) if fields[0].field == "max_uses"
    ));
    assert!(matches!(
        f.bo.create_coupon(
            &author,
            "LATER",
            NewCoupon {
                code: "later-1".into(),
                max_uses: None,
                max_uses_per_customer: None,
                expires_at: None,
            },
        )
        .await,
        Err(BackofficeError::Conflict {
            code: "code_taken",
            ..
        })
    ));
}

#[actix_web::test]
async fn batch_codes_are_distinct_unguessable_and_single_use() {
    let f = fixture();
    live_promotion(&f, "VIP").await;
    let marketer = user(&f.bo, "k@example.com", &["marketer"]).await;
    let batch =
        f.bo.create_batch(
            &marketer,
            "VIP",
            NewBatch {
                count: 500,
                prefix: "vip-".into(),
                expires_at: None,
            },
        )
        .await
        .expect("created");
    assert_eq!(batch.count, 500);
    let csv =
        f.bo.export_batch(&marketer, "VIP", batch.id)
            .await
            .expect("exported");
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("code,promotion,batch,expires_at,used"));
    let codes: std::collections::BTreeSet<String> = lines
        .map(|l| l.split(',').next().expect("code").to_string())
        .collect();
    assert_eq!(codes.len(), 500, "distinct");
    for code in &codes {
        let random = code.strip_prefix("VIP-").expect("prefixed");
        assert_eq!(random.len(), coupons::RANDOM_CHARS);
        assert!(
            random
                .bytes()
                .all(|b| b"23456789ABCDEFGHJKLMNPQRSTUVWXYZ".contains(&b)),
            "{code}"
        );
    }
    let code = codes.iter().next().expect("a code").to_lowercase();
    let order = OrderId::new();
    f.bo.redeem(&code, None, order).await.expect("first use");
    f.bo.redeem(&code, None, order).await.expect("same order");
    assert_eq!(
        f.bo.redeem(&code, None, OrderId::new()).await,
        Err(CouponRefusal::UsedUp),
        "single use"
    );
    let used =
        f.bo.export_batch(&marketer, "VIP", batch.id)
            .await
            .expect("exported");
    assert_eq!(used.matches(",true").count(), 1);
    assert!(matches!(
        f.bo.create_batch(
            &marketer,
            "VIP",
            NewBatch {
                count: 100_001,
                prefix: String::new(),
                expires_at: None
            }
        )
        .await,
        Err(BackofficeError::Invalid(fields)) if fields[0].field == "count"
    ));
    assert!(matches!(
        f.bo.export_batch(&marketer, "OTHER", batch.id).await,
        Err(BackofficeError::NotFound(_))
    ));
}

#[test]
fn the_guard_refuses_after_repeated_invalid_codes() {
    let clock = ManualClock::new(T0);
    let guard = coupons::CouponGuard::new(
        5,
        std::time::Duration::from_secs(600),
        Arc::new(clock.clone()),
    );
    for _ in 0..4 {
        assert_eq!(guard.guard("1.2.3.4"), Ok(()));
        guard.record_invalid("1.2.3.4");
        clock.advance(std::time::Duration::from_secs(60));
    }
    assert_eq!(guard.guard("1.2.3.4"), Ok(()));
    guard.record_invalid("1.2.3.4");
    // Five invalid codes at minutes 0..4: refused until the first leaves the window (minute 10).
    assert_eq!(guard.guard("1.2.3.4"), Err(RetryAfter { seconds: 360 }));
    assert_eq!(guard.guard("5.6.7.8"), Ok(()), "per client");
    clock.advance(std::time::Duration::from_secs(360));
    assert_eq!(guard.guard("1.2.3.4"), Ok(()), "the oldest left the window");
    guard.record_invalid("1.2.3.4");
    assert!(
        guard.guard("1.2.3.4").is_err(),
        "five within ten minutes again"
    );
}

fn row(number: u64, fields: &[(&str, &str)]) -> Row {
    Row {
        number,
        fields: fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    }
}

#[actix_web::test]
async fn the_erp_feeds_create_update_and_end_promotions_and_codes() {
    let f = fixture();
    let appliers = f.bo.appliers();
    let promotions = appliers
        .iter()
        .find(|a| a.feed() == FeedKind::Promotions)
        .expect("promotions applier");
    let coupons = appliers
        .iter()
        .find(|a| a.feed() == FeedKind::Coupons)
        .expect("coupons applier");
    let definition = ten_percent().to_string();
    let unknown_sku = json!({"benefit": {"type": "percent_off", "target": {"type": "skus", "skus": ["GHOST"]}, "percent_bp": 500}}).to_string();
    let outcomes = promotions
        .apply(vec![
            row(
                1,
                &[
                    ("id", "ERP-1"),
                    ("name", "Ten off"),
                    ("definition", &definition),
                    ("version", "2"),
                ],
            ),
            row(
                2,
                &[
                    ("id", "ERP-2"),
                    ("name", "Ghost"),
                    ("definition", &unknown_sku),
                    ("version", "1"),
                ],
            ),
            row(
                3,
                &[
                    ("id", "ERP-3"),
                    ("name", "Broken"),
                    ("definition", "{not json"),
                    ("version", "1"),
                ],
            ),
            row(
                4,
                &[
                    ("id", "ERP-1"),
                    ("name", "Ten off"),
                    ("definition", &definition),
                    ("version", "2"),
                ],
            ),
            row(
                5,
                &[
                    ("id", "ERP-1"),
                    ("name", "Old"),
                    ("definition", &definition),
                    ("version", "1"),
                ],
            ),
        ])
        .await
        .expect("applied");
    assert_eq!(outcomes[0], RowOutcome::Applied);
    for (bad, says) in [(&outcomes[1], "unknown SKU GHOST"), (&outcomes[2], "JSON")] {
        match bad {
            RowOutcome::Rejected(errors) => {
                assert_eq!(errors[0].field, "definition");
                assert!(errors[0].reason.contains(says), "{errors:?}");
            }
            other => panic!("expected a row error, got {other:?}"),
        }
    }
    assert_eq!(outcomes[3], RowOutcome::Unchanged);
    assert_eq!(outcomes[4], RowOutcome::Stale);
    let erp1 = f.bo.promotion("ERP-1").expect("stored");
    assert_eq!((erp1.status, erp1.author.as_str()), (Status::Active, "erp"));
    assert_eq!(live_ids(&f.bo), ["ERP-1"]);
    assert!(
        f.bo.promotion("ERP-2").is_err(),
        "a bad row changes nothing"
    );

    let approver = user(&f.bo, "a@example.com", &["approver"]).await;
    assert!(matches!(
        f.bo.edit_promotion(&approver, "ERP-1", PromotionPatch::default())
            .await,
        Err(BackofficeError::Conflict {
            code: "erp_managed",
            ..
        })
    ));

    let outcomes = coupons
        .apply(vec![
            row(
                1,
                &[
                    ("code", "erp-code"),
                    ("promotion", "ERP-1"),
                    ("max_uses", "10"),
                    ("version", "1"),
                ],
            ),
            row(
                2,
                &[("code", "LOST-1"), ("promotion", "NOPE"), ("version", "1")],
            ),
            row(
                3,
                &[
                    ("code", "ERP-CODE"),
                    ("promotion", "ERP-1"),
                    ("max_uses", "10"),
                    ("version", "1"),
                ],
            ),
            row(
                4,
                &[
                    ("code", "x"),
                    ("promotion", "ERP-1"),
                    ("expires_at", "soon"),
                    ("version", ""),
                ],
            ),
        ])
        .await
        .expect("applied");
    assert_eq!(outcomes[0], RowOutcome::Applied);
    assert!(matches!(&outcomes[1], RowOutcome::Rejected(e) if e[0].field == "promotion"));
    assert_eq!(outcomes[2], RowOutcome::Unchanged);
    match &outcomes[3] {
        RowOutcome::Rejected(errors) => {
            let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
            assert_eq!(fields, ["code", "expires_at", "version"]);
        }
        other => panic!("expected a row error, got {other:?}"),
    }
    assert!(f.bo.check("Erp-Code", None, T0).is_ok());

    let outcomes = promotions
        .apply(vec![row(
            1,
            &[
                ("id", "ERP-1"),
                ("name", "Ten off"),
                ("definition", &definition),
                ("active", "false"),
                ("version", "3"),
            ],
        )])
        .await
        .expect("applied");
    assert_eq!(outcomes[0], RowOutcome::Applied);
    assert_eq!(status(&f.bo, "ERP-1"), Status::Ended);
    assert!(live_ids(&f.bo).is_empty());
    assert_eq!(
        f.bo.check("ERP-CODE", None, T0),
        Err(CouponRefusal::PromotionNotLive)
    );
}

#[actix_web::test]
async fn the_erp_cannot_take_over_a_back_office_promotion() {
    let f = fixture();
    live_promotion(&f, "MINE").await;
    let appliers = f.bo.appliers();
    let outcomes = appliers[0]
        .apply(vec![row(
            1,
            &[
                ("id", "MINE"),
                ("name", "Taken"),
                ("definition", &ten_percent().to_string()),
                ("version", "9"),
            ],
        )])
        .await
        .expect("applied");
    assert!(matches!(&outcomes[0], RowOutcome::Rejected(e) if e[0].field == "id"));
    assert_eq!(f.bo.promotion("MINE").expect("kept").name, "Promotion MINE");
}

#[actix_web::test]
async fn every_promotion_change_is_audited() {
    let f = fixture();
    live_promotion(&f, "AUD").await;
    let actions: Vec<String> =
        f.bo.audit(None, 100)
            .expect("audit")
            .into_iter()
            .map(|e| e.action)
            .collect();
    assert_eq!(
        actions,
        [
            "user.create",
            "user.create",
            "promotion.create",
            "promotion.approve"
        ]
    );
}

#[actix_web::test]
async fn a_reopened_back_office_publishes_what_was_approved() {
    let store = Arc::new(MemoryStore::default());
    let f = fixture_on(store.clone());
    live_promotion(&f, "KEEP").await;
    live_promotion(&f, "DROP").await;
    let approver = user(&f.bo, "e@example.com", &["approver"]).await;
    f.bo.end_promotion(&approver, "DROP").await.expect("ended");
    let version = f.bo.live_version();
    drop(f);
    let again = fixture_on(store);
    assert_eq!(live_ids(&again.bo), ["KEEP"]);
    assert!(again.bo.live_version() > version, "versions keep growing");
}
