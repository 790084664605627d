//! The appliers' row rules against a real catalog actor, inventory and edge replica on sled in a
//! temp dir, with a manual clock.

use super::*;
use crate::actors::catalog::{CatalogActor, Upsert};
use crate::actors::inventory::Inventory;
use crate::clock::ManualClock;
use crate::config::{EdgeNodeSettings, EdgeSettings, ImportSettings};
use crate::storage::sled::SledStorage;
use crate::storage::Storage;
use protocol::replication::sync::Item;
use protocol::replication::{CommandKind, ReplicaId};
use protocol::{CatalogSnapshot, Currency, LocationId, Money, Sku, StockLevel};
use std::time::Duration;

struct Harness {
    _dir: tempfile::TempDir,
    storage: Arc<SledStorage>,
    snapshot: Arc<arc_swap::ArcSwap<CatalogSnapshot>>,
    catalog: actix::Addr<CatalogActor>,
    inventory: Inventory,
    edge: crate::edge::EdgeHandle,
    importer: Importer,
    clock: ManualClock,
}

fn start_time() -> time::OffsetDateTime {
    time::macros::datetime!(2026-11-27 12:00 UTC)
}

async fn harness_with(settings: ImportSettings) -> Harness {
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = SledStorage::open(dir.path(), 8).expect("sled opens");
    let dyn_storage: Arc<dyn Storage> = storage.clone();
    let (catalog, snapshot) = CatalogActor::start(dyn_storage.clone())
        .await
        .expect("catalog");
    let inventory = Inventory::start(dyn_storage.clone(), 2)
        .await
        .expect("inventory");
    let clock = ManualClock::new(start_time());
    let edge = crate::edge::replica::EdgeReplica::start(crate::edge::replica::Start {
        settings: EdgeSettings {
            nodes: vec![EdgeNodeSettings {
                replica: "berlin".into(),
                location: "store-berlin".into(),
                name: String::new(),
                credential_sha256: hex::encode(crate::auth::token_hash("berlin-secret")),
            }],
            ..EdgeSettings::default()
        },
        store: crate::edge::sled_store::SledEdgeStore::open(&storage).expect("edge store"),
        holds: Arc::new(crate::edge::merge::HubHolds {
            inventory: inventory.clone(),
            storage: dyn_storage,
        }),
        inventory: inventory.clone(),
        catalog: snapshot.clone(),
        clock: Arc::new(clock.clone()),
    })
    .await
    .expect("edge replica");
    let importer = start(Start {
        settings,
        storage: storage.clone(),
        keyspace: storage.keyspace(),
        catalog: catalog.clone(),
        snapshot: snapshot.clone(),
        inventory: inventory.clone(),
        edge: edge.clone(),
        clock: Arc::new(clock.clone()),
        currency: Currency::EUR,
        home: protocol::checkout::CheckoutConfig::default().markets[0].clone(),
        pull_now: true,
    })
    .await
    .expect("importer");
    Harness {
        _dir: dir,
        storage,
        snapshot,
        catalog,
        inventory,
        edge,
        importer,
        clock,
    }
}

async fn harness() -> Harness {
    harness_with(ImportSettings {
        // The timer is driven by hand in these tests (see `reprice`), except where it is tested.
        price_check_every: Duration::from_secs(3600),
        keep_runs: 3,
        ..ImportSettings::default()
    })
    .await
}

impl Harness {
    async fn csv(&self, feed: FeedKind, body: &str) -> ImportReport {
        let parsed = parse::csv(feed, body.as_bytes()).expect("readable CSV");
        self.importer
            .run_parsed(feed, "upload", "test", parsed)
            .await
            .expect("the run completes")
    }

    fn snap(&self) -> Arc<CatalogSnapshot> {
        self.snapshot.load_full()
    }

    fn price(&self, sku: &str) -> Option<(i64, Option<i64>)> {
        let snap = self.snap();
        let sku = Sku::parse(sku).expect("sku");
        let v = snap.product_by_sku(&sku)?.variant(&sku)?.clone();
        Some((v.price.minor, v.compare_at.map(|m| m.minor)))
    }

    fn on_hand(&self, location: &str, sku: &str) -> Option<i64> {
        self.inventory
            .level(&LocationId(location.into()), &Sku::parse(sku).expect("sku"))
            .map(|l| l.on_hand)
    }

    async fn queued(&self) -> Vec<CommandKind> {
        let node = ReplicaId("berlin".into());
        self.edge
            .store()
            .outbox(&node, 1, 1000, usize::MAX)
            .await
            .expect("outbox")
            .into_iter()
            .flat_map(|e| e.items)
            .filter_map(|i| match i {
                Item::Command(c) => Some(c.kind),
                _ => None,
            })
            .collect()
    }
}

fn counts(r: &ImportReport) -> (u64, u64, u64, u64) {
    (r.applied, r.unchanged, r.stale, r.rejected)
}

fn fields_of(r: &ImportReport) -> Vec<(u64, &str)> {
    r.errors.iter().map(|e| (e.row, e.field.as_str())).collect()
}

const PRODUCTS: &str = "product,sku,name,brand,category,category_name,variant_title,tax_class,barcode,weight_grams,attributes,price,currency,active,version
COF-1,COF-1-250,House Beans,Acme,coffee,Coffee,250 g,reduced,4006381333931,300,origin=Brazil;roast=dark,6.90,EUR,true,1
COF-1,COF-1-500,House Beans,Acme,coffee,Coffee,500 g,reduced,,550,origin=Brazil;roast=dark,12.90,EUR,true,1
TEA-1,TEA-1-100,Green Tea,Leafy,tea,,100 g,,,120,,4.50,,,1
";

#[actix_web::test]
async fn products_become_one_snapshot_and_the_same_feed_twice_changes_nothing() {
    let h = harness().await;
    let before = h.snap().version;
    let r = h.csv(FeedKind::Products, PRODUCTS).await;
    assert_eq!(counts(&r), (3, 0, 0, 0), "{:?}", r.errors);
    assert_eq!(r.rows, 3);
    let snap = h.snap();
    assert_eq!(
        snap.version,
        before + 1,
        "one published snapshot for the page"
    );
    let beans = snap
        .product_by_sku(&Sku::parse("COF-1-500").expect("sku"))
        .expect("imported");
    assert_eq!(beans.variants.len(), 2);
    assert_eq!(beans.slug, "house-beans");
    assert_eq!(beans.image, "/images/house-beans.svg");
    assert_eq!(
        (beans.tax_class.as_str(), beans.tax_rate_bp),
        ("reduced", 700)
    );
    assert_eq!(
        beans.attributes.get("origin").map(String::as_str),
        Some("Brazil")
    );
    assert_eq!(beans.variants[0].barcode.as_deref(), Some("4006381333931"));
    assert_eq!(beans.variants[1].price, Money::new(1290, Currency::EUR));
    let tea = snap.product_by_slug("green-tea").expect("tea");
    assert_eq!(
        (tea.tax_rate_bp, tea.variants[0].title.as_str()),
        (1900, "100 g")
    );
    assert_eq!(
        snap.category(&protocol::CategoryId("tea".into()))
            .map(|c| c.name.as_str()),
        Some("Tea"),
        "a new category is named after its slug"
    );
    let id = beans.id;

    let again = h.csv(FeedKind::Products, PRODUCTS).await;
    assert_eq!(counts(&again), (0, 3, 0, 0));
    assert_eq!(h.snap().version, before + 1, "nothing published");

    let renamed = "product,sku,name,category,price,version\nCOF-1,COF-1-500,House Beans Deluxe,coffee,13.50,2\nCOF-1,COF-1-250,House Beans,coffee,6.90,0\n";
    let r = h.csv(FeedKind::Products, renamed).await;
    assert_eq!(
        counts(&r),
        (1, 0, 1, 0),
        "the older version is stale: {:?}",
        r.errors
    );
    let snap = h.snap();
    let beans = snap.product(id).expect("the same product id");
    assert_eq!(beans.name, "House Beans Deluxe");
    assert_eq!(beans.slug, "house-beans-deluxe");
    assert_eq!(h.price("COF-1-500"), Some((1350, None)));

    let conflict = "product,sku,name,category,price,version\nCOF-1,COF-1-500,Other,coffee,1.00,2\n";
    let r = h.csv(FeedKind::Products, conflict).await;
    assert_eq!(counts(&r), (0, 0, 0, 1));
    assert_eq!(fields_of(&r), vec![(1, "version")]);
}

#[actix_web::test]
async fn bad_rows_are_rejected_whole_and_the_rest_applied() {
    let h = harness().await;
    let body = "product,sku,name,category,price,currency,barcode,version
P1,P1-A,Alpha,misc,1.00,EUR,,1
P2,P2-A,Beta,misc,,EUR,,1
P3,bad sku,Gamma,misc,1.00,EUR,,1
P4,P4-A,Delta,misc,1.00,USD,,1
P5,P5-A,Epsilon,misc,1.00,EUR,4006381333932,1
P6,P6-A,Zeta,misc,2.00,EUR,,1
P7,P7-A,Eta,misc,1.00,EUR
";
    let r = h.csv(FeedKind::Products, body).await;
    assert_eq!(counts(&r), (2, 0, 0, 5), "{:?}", r.errors);
    assert_eq!(
        fields_of(&r),
        vec![
            (7, ""),
            (2, "price"),
            (3, "sku"),
            (4, "currency"),
            (5, "barcode")
        ]
    );
    assert!(
        r.errors[1].reason.contains("needs a price"),
        "{}",
        r.errors[1].reason
    );
    let snap = h.snap();
    for sku in ["P1-A", "P6-A"] {
        assert!(snap
            .product_by_sku(&Sku::parse(sku).expect("sku"))
            .is_some());
    }
    for sku in ["P2-A", "P4-A", "P5-A"] {
        assert!(
            snap.product_by_sku(&Sku::parse(sku).expect("sku"))
                .is_none(),
            "{sku} changed nothing"
        );
    }
}

#[actix_web::test]
async fn withdrawn_variants_stop_selling_and_a_product_without_any_leaves() {
    let h = harness().await;
    h.csv(FeedKind::Products, PRODUCTS).await;
    let id = h.snap().product_by_slug("house-beans").expect("beans").id;
    let r = h
        .csv(
            FeedKind::Products,
            "product,sku,name,category,active,version\nCOF-1,COF-1-250,House Beans,coffee,false,2\n",
        )
        .await;
    assert_eq!(counts(&r), (1, 0, 0, 0), "{:?}", r.errors);
    let skus: Vec<String> = h
        .snap()
        .product(id)
        .expect("still sold")
        .variants
        .iter()
        .map(|v| v.sku.to_string())
        .collect();
    assert_eq!(skus, vec!["COF-1-500"]);
    h.csv(
        FeedKind::Products,
        "product,sku,name,category,active,version\nCOF-1,COF-1-500,House Beans,coffee,false,2\n",
    )
    .await;
    assert!(h.snap().product(id).is_none(), "no active variant: gone");
    assert!(h.snap().product_by_slug("house-beans").is_none());
    // Back, with the same id and its old price (no price in the row).
    let r = h
        .csv(
            FeedKind::Products,
            "product,sku,name,category,active,version\nCOF-1,COF-1-500,House Beans,coffee,true,3\n",
        )
        .await;
    assert_eq!(counts(&r), (1, 0, 0, 0), "{:?}", r.errors);
    assert_eq!(h.price("COF-1-500"), Some((1290, None)));
    assert_eq!(
        h.snap().product_by_slug("house-beans").map(|p| p.id),
        Some(id)
    );
}

#[actix_web::test]
async fn skus_stay_with_their_product_slugs_stay_unique_and_catalog_products_are_taken_over() {
    let h = harness().await;
    let seeded = protocol::Product {
        id: protocol::ProductId::new(),
        slug: "green-tea".into(),
        name: "Green Tea".into(),
        brand: "Demo".into(),
        description: String::new(),
        category: protocol::CategoryId("tea".into()),
        tax_rate_bp: 700,
        tax_class: "reduced".into(),
        image: "/images/green-tea.svg".into(),
        variants: vec![protocol::Variant {
            sku: Sku::parse("DEMO-TEA").expect("sku"),
            title: "Default".into(),
            price: Money::new(450, Currency::EUR),
            compare_at: Some(Money::new(500, Currency::EUR)),
            barcode: None,
            weight_grams: 100,
        }],
        attributes: Default::default(),
    };
    h.catalog
        .send(Upsert {
            categories: Vec::new(),
            products: vec![seeded.clone()],
        })
        .await
        .expect("sent")
        .expect("stored");
    let body = "product,sku,name,category,price,version
TEA-9,TEA-9-A,Green Tea,tea,3.00,1
DEMO-1,DEMO-TEA,Green Tea Classic,tea,,1
TEA-9,DEMO-TEA,Green Tea,tea,3.00,2
";
    let r = h.csv(FeedKind::Products, body).await;
    assert_eq!(counts(&r), (2, 0, 0, 1), "{:?}", r.errors);
    assert_eq!(fields_of(&r), vec![(3, "sku")]);
    assert!(r.errors[0].reason.contains("belongs to product DEMO-1"));
    let snap = h.snap();
    let tea9 = snap
        .product_by_sku(&Sku::parse("TEA-9-A").expect("sku"))
        .expect("new");
    assert_eq!(
        tea9.slug, "green-tea-tea-9",
        "the demo product had green-tea"
    );
    let taken = snap
        .product(seeded.id)
        .expect("the demo product, taken over");
    assert_eq!(taken.name, "Green Tea Classic");
    assert_eq!(
        (taken.variants[0].price.minor, taken.variants[0].compare_at),
        (450, Some(Money::new(500, Currency::EUR))),
        "no price in the row: the catalog's price stays"
    );
}

#[actix_web::test]
async fn the_price_book_sets_shelf_prices_in_its_windows() {
    let h = harness().await;
    h.csv(FeedKind::Products, PRODUCTS).await;
    let body = "sku,price_list,currency,price,compare_at,valid_from,valid_until,version
COF-1-500,retail,EUR,11.90,12.90,,,1
COF-1-500,retail,EUR,9.90,12.90,2026-11-28T00:00:00Z,2026-11-30T00:00:00Z,1
COF-1-500,retail,USD,14.00,,,,1
COF-1-500,staff,EUR,8.00,,,,1
NOPE,retail,EUR,1.00,,,,1
COF-1-500,retail,XYZ,1.00,,,,1
COF-1-500,retail,EUR,-1,,,,1
COF-1-500,retail,EUR,1.00,,2026-12-02T00:00:00Z,2026-12-01T00:00:00Z,1
";
    let r = h.csv(FeedKind::Prices, body).await;
    assert_eq!(counts(&r), (4, 0, 0, 4), "{:?}", r.errors);
    assert_eq!(
        fields_of(&r),
        vec![
            (5, "sku"),
            (6, "currency"),
            (7, "price"),
            (8, "valid_until")
        ]
    );
    assert_eq!(
        h.price("COF-1-500"),
        Some((1190, Some(1290))),
        "retail EUR, valid now"
    );
    assert_eq!(
        h.price("COF-1-250"),
        Some((690, None)),
        "no entry: the base price"
    );

    let side_effects = h.csv(FeedKind::Prices, body).await;
    assert_eq!(counts(&side_effects), (0, 4, 0, 4), "the same feed twice");

    // The sale opens and closes with the clock.
    let side = catalog_side(&h).await;
    h.clock.advance(Duration::from_secs(24 * 3600));
    side.reprice(Some(catalog::unix_ms(start_time())), side.now_ms())
        .await
        .expect("repriced");
    assert_eq!(h.price("COF-1-500"), Some((990, Some(1290))));
    let from = side.now_ms();
    h.clock.advance(Duration::from_secs(3 * 24 * 3600));
    side.reprice(Some(from), side.now_ms())
        .await
        .expect("repriced");
    assert_eq!(h.price("COF-1-500"), Some((1190, Some(1290))));

    let stale = "sku,price_list,currency,price,version\nCOF-1-500,retail,EUR,5.00,0\n";
    assert_eq!(counts(&h.csv(FeedKind::Prices, stale).await), (0, 0, 1, 0));
    assert_eq!(h.price("COF-1-500"), Some((1190, Some(1290))));
}

/// A catalog side over the harness's state, for driving the price timer by hand.
async fn catalog_side(h: &Harness) -> Arc<catalog::CatalogSide> {
    catalog::CatalogSide::load(catalog::SideDeps {
        catalog: h.catalog.clone(),
        snapshot: h.snapshot.clone(),
        store: h.importer.store().clone(),
        clock: Arc::new(h.clock.clone()),
        currency: Currency::EUR,
        price_list: "retail".into(),
        home: protocol::checkout::CheckoutConfig::default().markets[0].clone(),
    })
    .await
    .expect("loads")
}

#[actix_web::test]
async fn the_timer_applies_a_sale_when_its_window_opens() {
    let h = harness_with(ImportSettings {
        price_check_every: Duration::from_millis(20),
        ..ImportSettings::default()
    })
    .await;
    h.csv(FeedKind::Products, PRODUCTS).await;
    let r = h
        .csv(
            FeedKind::Prices,
            "sku,currency,price,valid_from,version\nTEA-1-100,EUR,3.50,2026-11-27T13:00:00Z,1\n",
        )
        .await;
    assert_eq!(counts(&r), (1, 0, 0, 0), "{:?}", r.errors);
    assert_eq!(h.price("TEA-1-100"), Some((450, None)), "not yet");
    h.clock.advance(Duration::from_secs(3600));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while h.price("TEA-1-100") != Some((350, None)) {
        assert!(
            std::time::Instant::now() < deadline,
            "the sale never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    h.importer.stop();
}

#[actix_web::test]
async fn a_new_variant_may_take_its_price_from_the_price_book() {
    let h = harness().await;
    let r = h
        .csv(
            FeedKind::Products,
            "product,sku,name,category,active,version\nP,P-1,Pear,fruit,false,1\n",
        )
        .await;
    assert_eq!(
        counts(&r),
        (1, 0, 0, 0),
        "a withdrawn variant needs no price"
    );
    let r = h
        .csv(
            FeedKind::Prices,
            "sku,currency,price,version\nP-1,EUR,2.20,1\n",
        )
        .await;
    assert_eq!(counts(&r), (1, 0, 0, 0), "{:?}", r.errors);
    assert_eq!(h.price("P-1"), None, "still withdrawn");
    let r = h
        .csv(
            FeedKind::Products,
            "product,sku,name,category,active,version\nP,P-1,Pear,fruit,true,2\n",
        )
        .await;
    assert_eq!(counts(&r), (1, 0, 0, 0), "{:?}", r.errors);
    assert_eq!(h.price("P-1"), Some((220, None)));
}

const STOCK_HEAD: &str = "sku,location,kind,quantity,movement,version\n";

#[actix_web::test]
async fn online_stock_levels_and_movements_apply_once() {
    let h = harness().await;
    h.csv(FeedKind::Products, PRODUCTS).await;
    let body = format!(
        "{STOCK_HEAD}COF-1-500,online,level,10,,1
COF-1-500,online,delta,5,rcv-1,2
COF-1-500,online,delta,-20,dmg-1,3
COF-1-500,online,delta,-15,dmg-2,4
TEA-1-100,online,delta,7,rcv-2,1
COF-1-500,store-nowhere,level,1,,1
UNKNOWN,online,level,1,,1
"
    );
    let r = h.csv(FeedKind::Stock, &body).await;
    assert_eq!(counts(&r), (4, 0, 0, 3), "{:?}", r.errors);
    assert_eq!(
        fields_of(&r),
        vec![(3, "quantity"), (6, "location"), (7, "sku")]
    );
    assert!(
        r.errors[0].reason.contains("15 on hand"),
        "{}",
        r.errors[0].reason
    );
    assert_eq!(h.on_hand("online", "COF-1-500"), Some(0));
    assert_eq!(h.on_hand("online", "TEA-1-100"), Some(7));

    let again = h.csv(FeedKind::Stock, &body).await;
    assert_eq!(
        counts(&again),
        (0, 4, 0, 3),
        "movements by id, levels by version; the refused movement is refused again: {:?}",
        again.errors
    );
    assert_eq!(h.on_hand("online", "COF-1-500"), Some(0));
    assert_eq!(h.on_hand("online", "TEA-1-100"), Some(7));

    let late =
        format!("{STOCK_HEAD}COF-1-500,online,level,99,,0\nCOF-1-500,online,delta,5,rcv-1,7\n");
    assert_eq!(counts(&h.csv(FeedKind::Stock, &late).await), (0, 1, 1, 0));
    assert_eq!(h.on_hand("online", "COF-1-500"), Some(0));
}

/// A new stock applier over the harness's state: it loads what the old one stored, as after a
/// restart.
async fn reload_stock(h: &Harness) -> stock::StockApplier {
    stock::StockApplier::load(stock::StockDeps {
        inventory: h.inventory.clone(),
        edge: h.edge.clone(),
        storage: h.storage.clone(),
        store: h.importer.store().clone(),
        side: catalog_side(h).await,
    })
    .await
    .expect("loads")
}

#[actix_web::test]
async fn applied_movements_are_known_again_after_a_restart() {
    let h = harness().await;
    h.csv(FeedKind::Products, PRODUCTS).await;
    let body = format!(
        "{STOCK_HEAD}TEA-1-100,online,delta,4,in-1,1\nTEA-1-100,online,level,9,,1\n\
         TEA-1-100,online,delta,-100,out-1,1\n"
    );
    assert_eq!(counts(&h.csv(FeedKind::Stock, &body).await), (2, 0, 0, 1));
    // A new applier loads what the old one applied, as after a restart.
    let reloaded = reload_stock(&h).await;
    let rows = parse::csv(FeedKind::Stock, body.as_bytes())
        .expect("csv")
        .rows;
    let outcomes = reloaded.apply(rows).await.expect("applied");
    assert_eq!(
        outcomes[..2],
        [RowOutcome::Unchanged, RowOutcome::Unchanged]
    );
    assert!(
        matches!(outcomes[2], RowOutcome::Rejected(_)),
        "refused again"
    );
    assert_eq!(h.on_hand("online", "TEA-1-100"), Some(9));
}

#[actix_web::test]
async fn a_rejected_movement_is_not_seen_so_its_correction_in_the_same_page_applies() {
    let h = harness().await;
    h.csv(FeedKind::Products, PRODUCTS).await;
    let body = format!(
        "{STOCK_HEAD}COF-1-500,online,level,10,,1
COF-1-500,online,delta,-20,mv-x,1
COF-1-500,online,delta,-4,mv-x,1
TEA-1-100,store-berlin,delta,-1,st-1,1
TEA-1-100,store-berlin,delta,3,st-1,1
"
    );
    let r = h.csv(FeedKind::Stock, &body).await;
    assert_eq!(counts(&r), (3, 0, 0, 2), "{:?}", r.errors);
    assert_eq!(fields_of(&r), vec![(2, "quantity"), (4, "quantity")]);
    assert_eq!(h.on_hand("online", "COF-1-500"), Some(6), "10 - 4");
    let queued = h.queued().await;
    assert!(
        matches!(queued.as_slice(), [CommandKind::Restock { units: 3, .. }]),
        "{queued:?}"
    );
    let again = h.csv(FeedKind::Stock, &body).await;
    assert_eq!(
        counts(&again),
        (0, 5, 0, 0),
        "applied once: {:?}",
        again.errors
    );
    assert_eq!(h.on_hand("online", "COF-1-500"), Some(6));
    assert_eq!(h.queued().await.len(), 1);
}

#[actix_web::test]
async fn a_level_stored_without_its_effect_is_applied_when_sent_again() {
    let h = harness().await;
    h.csv(FeedKind::Products, PRODUCTS).await;
    let first = format!("{STOCK_HEAD}COF-1-500,online,level,10,,1\n");
    assert_eq!(counts(&h.csv(FeedKind::Stock, &first).await), (1, 0, 0, 0));
    // What a crash between storing the versions and the effects leaves behind: version 5 is
    // stored, neither the inventory nor the store's node has it.
    let mut batch = store::Batch::default();
    for (location, sku) in [("online", "COF-1-500"), ("store-berlin", "TEA-1-100")] {
        let (location, sku) = (LocationId(location.into()), Sku::parse(sku).expect("sku"));
        let key = store::stock_key(&location, &sku);
        let state = store::StockState {
            location,
            sku,
            version: 5,
            level: Some(20),
        };
        batch.put(key, &state).expect("encoded");
    }
    h.importer.store().write(batch).await.expect("written");
    // A new applier loads the versions, as after the restart.
    let reloaded = reload_stock(&h).await;
    let rows = |body: &str| {
        parse::csv(FeedKind::Stock, format!("{STOCK_HEAD}{body}").as_bytes())
            .expect("csv")
            .rows
    };
    let older = "COF-1-500,online,level,15,,4\nTEA-1-100,store-berlin,level,15,,4\n";
    assert_eq!(
        reloaded.apply(rows(older)).await.expect("applied"),
        [RowOutcome::Stale, RowOutcome::Stale],
        "older than the stored version"
    );
    let resent = "COF-1-500,online,level,20,,5\nTEA-1-100,store-berlin,level,20,,5\n";
    assert_eq!(
        reloaded.apply(rows(resent)).await.expect("applied"),
        [RowOutcome::Applied, RowOutcome::Applied],
        "the same version, its effect missing: applied now"
    );
    assert_eq!(h.on_hand("online", "COF-1-500"), Some(20));
    assert!(
        matches!(
            h.queued().await.as_slice(),
            [CommandKind::Count { on_hand: 20, .. }]
        ),
        "{:?}",
        h.queued().await
    );
    assert_eq!(
        reloaded.apply(rows(resent)).await.expect("applied"),
        [RowOutcome::Unchanged, RowOutcome::Unchanged],
        "and once only"
    );
    assert_eq!(h.queued().await.len(), 1);
}

#[actix_web::test]
async fn a_level_keeps_what_is_held() {
    let h = harness().await;
    h.csv(FeedKind::Products, PRODUCTS).await;
    let sku = Sku::parse("TEA-1-100").expect("sku");
    h.inventory
        .set(vec![StockLevel {
            sku: sku.clone(),
            location: LocationId::online(),
            on_hand: 5,
            held: 0,
        }])
        .await
        .expect("set");
    h.inventory
        .hold(
            protocol::CheckoutId::new(),
            &LocationId::online(),
            &[(sku.clone(), 2)],
            start_time() + time::Duration::minutes(15),
        )
        .await
        .expect("held");
    let r = h
        .csv(
            FeedKind::Stock,
            &format!("{STOCK_HEAD}TEA-1-100,online,level,9,,1\n"),
        )
        .await;
    assert_eq!(counts(&r), (1, 0, 0, 0));
    let level = h
        .inventory
        .level(&LocationId::online(), &sku)
        .expect("level");
    assert_eq!((level.on_hand, level.held), (9, 2));
}

#[actix_web::test]
async fn store_stock_goes_to_the_node_as_commands_never_applied_here() {
    let h = harness().await;
    h.csv(FeedKind::Products, PRODUCTS).await;
    let body = format!(
        "{STOCK_HEAD}TEA-1-100,store-berlin,level,12,,1
TEA-1-100,store-berlin,delta,4,rcv-9,2
TEA-1-100,store-berlin,delta,-1,theft-1,3
"
    );
    let r = h.csv(FeedKind::Stock, &body).await;
    assert_eq!(counts(&r), (2, 0, 0, 1), "{:?}", r.errors);
    assert_eq!(fields_of(&r), vec![(3, "quantity")]);
    assert!(r.errors[0].reason.contains("send a count"));
    assert_eq!(
        h.on_hand("store-berlin", "TEA-1-100"),
        None,
        "not applied by the hub"
    );
    let queued = h.queued().await;
    assert_eq!(queued.len(), 2, "{queued:?}");
    assert!(
        matches!(&queued[0], CommandKind::Count { sku, on_hand: 12, .. } if sku.as_str() == "TEA-1-100")
    );
    assert!(
        matches!(&queued[1], CommandKind::Restock { units: 4, reason, .. } if reason.contains("rcv-9"))
    );
    let again = h.csv(FeedKind::Stock, &body).await;
    assert_eq!(counts(&again), (0, 2, 0, 1), "{:?}", again.errors);
    assert_eq!(h.queued().await.len(), 2, "nothing queued twice");
}

#[actix_web::test]
async fn a_forward_interrupted_by_a_crash_is_reported_not_repeated() {
    let h = harness().await;
    h.csv(FeedKind::Products, PRODUCTS).await;
    // What a crash between recording and marking done leaves behind.
    let mut batch = store::Batch::default();
    batch
        .put(
            store::forwarding_key("level:store-berlin/TEA-1-100/5"),
            &store::Forwarding {
                id: "level:store-berlin/TEA-1-100/5".into(),
                done: false,
                command: None,
            },
        )
        .expect("encoded");
    h.importer.store().write(batch).await.expect("written");
    let body = format!("{STOCK_HEAD}TEA-1-100,store-berlin,level,3,,5\n");
    let r = h.csv(FeedKind::Stock, &body).await;
    assert_eq!(counts(&r), (0, 0, 0, 1));
    assert!(r.errors[0]
        .reason
        .contains("may or may not have been queued"));
    assert!(h.queued().await.is_empty());
    let key = store::stock_key(
        &LocationId("store-berlin".into()),
        &Sku::parse("TEA-1-100").expect("sku"),
    );
    let stored: Option<store::StockState> = h.importer.store().get(&key).expect("read");
    assert_eq!(stored, None, "a refused level's version is not kept");
    assert_eq!(counts(&h.csv(FeedKind::Stock, &body).await), (0, 1, 0, 0));
}

#[actix_web::test]
async fn runs_are_stored_newest_first_and_only_the_last_are_kept() {
    let h = harness().await;
    let mut ids = Vec::new();
    for i in 0..4 {
        let r = h
            .csv(
                FeedKind::Products,
                &format!("product,sku,name,category,price,version\nP{i},P{i}-A,Thing {i},misc,1.00,1\nP{i},,x,misc,1.00,1\n"),
            )
            .await;
        assert_eq!((r.applied, r.rejected), (1, 1));
        ids.push(r.id);
    }
    let runs = h.importer.runs(10).await.expect("runs");
    let listed: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        listed,
        vec![ids[3].as_str(), ids[2].as_str(), ids[1].as_str()]
    );
    let full = h
        .importer
        .report(ids[3].parse().expect("ulid"))
        .await
        .expect("read")
        .expect("kept");
    assert_eq!(fields_of(&full), vec![(2, "sku")]);
    assert!(h
        .importer
        .report(ids[0].parse().expect("ulid"))
        .await
        .expect("read")
        .is_none());
}

#[actix_web::test]
async fn a_feed_without_an_applier_is_not_enabled() {
    let h = harness().await;
    let e = h
        .importer
        .run(FeedKind::Coupons, "push", Vec::new())
        .await
        .expect_err("no applier");
    assert!(matches!(e, ImportError::NotEnabled(FeedKind::Coupons)));
    struct Echo;
    #[async_trait]
    impl FeedApplier for Echo {
        fn feed(&self) -> FeedKind {
            FeedKind::Coupons
        }
        async fn apply(&self, rows: Vec<Row>) -> Result<Vec<RowOutcome>, ImportError> {
            Ok(rows
                .iter()
                .map(|r| match r.get("code") {
                    "" => RowOutcome::Rejected(vec![r.error("code", "required")]),
                    _ => RowOutcome::Applied,
                })
                .collect())
        }
    }
    h.importer.register(Arc::new(Echo));
    let parsed = parse::csv(FeedKind::Coupons, b"code,promotion\nSAVE10,P1\n,P1\n").expect("csv");
    let r = h
        .importer
        .run_parsed(FeedKind::Coupons, "push", "erp", parsed)
        .await
        .expect("enabled now");
    assert_eq!((r.applied, r.rejected, r.rows), (1, 1, 2));
}

#[actix_web::test]
async fn of_many_levels_of_one_sku_in_a_page_only_the_newest_is_applied() {
    let h = harness().await;
    h.csv(FeedKind::Products, PRODUCTS).await;
    // 40 counts of one SKU at a store and 40 online, versions out of order, the newest (40)
    // in the middle, a repeat of it at the end; a movement in between still applies.
    let mut body = STOCK_HEAD.to_string();
    let versions: Vec<u64> = (1..=20).chain((21..=40).rev()).collect();
    for v in &versions {
        body.push_str(&format!("TEA-1-100,store-berlin,level,{v},,{v}\n"));
        body.push_str(&format!("COF-1-500,online,level,{},,{v}\n", v * 10));
    }
    body.push_str("COF-1-500,online,delta,5,rcv-late,1\n");
    body.push_str("TEA-1-100,store-berlin,level,40,,40\n");
    body.push_str("COF-1-500,online,level,7,,40\n");
    let r = h.csv(FeedKind::Stock, &body).await;
    // Applied: one level each and the movement; unchanged: the same newest level again;
    // stale: the 78 older ones; rejected: version 40 again with another quantity.
    assert_eq!(counts(&r), (3, 1, 78, 1), "{:?}", r.errors);
    assert_eq!(fields_of(&r), vec![(83, "version")]);
    assert_eq!(
        h.on_hand("online", "COF-1-500"),
        Some(405),
        "level 400, then +5"
    );
    let queued = h.queued().await;
    assert_eq!(
        queued.len(),
        1,
        "one count for the node, not one per level: {queued:?}"
    );
    assert!(
        matches!(&queued[0], CommandKind::Count { on_hand: 40, .. }),
        "{queued:?}"
    );
    // The same page again changes nothing.
    let again = h.csv(FeedKind::Stock, &body).await;
    assert_eq!(counts(&again).0, 0, "{:?}", again.errors);
    assert_eq!(h.queued().await.len(), 1);
}
