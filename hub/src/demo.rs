//! Demo data: a deterministic catalog for "Omnihub Market", a grocery-and-lifestyle shop, and the
//! SVG placeholder images of its products and categories.
//!
//! Everything comes from constant word lists and a seeded SplitMix64, so every run on every
//! machine produces the same catalog: the same product ids, names, SKUs, barcodes, prices and
//! stock. Prices are integer minor units throughout (no floating point), so nothing depends on
//! the platform's rounding.

use protocol::{Category, CategoryId, Currency, Money, Product, ProductId, Sku, Variant};
use std::collections::{BTreeMap, HashSet};
use ulid::Ulid;

/// The seed of every random choice in the demo catalog.
const SEED: u64 = 0x4F4D_4E49_4855_4221;
/// Mixed into [`SEED`] for the stock levels, so they do not shift when products change.
const STOCK_STREAM: u64 = 0x5354_4F43_4B00_0001;
/// Timestamp of every demo product id: 2026-01-01T00:00:00Z.
const ID_TIMESTAMP_MS: u64 = 1_767_225_600_000;
/// Leading digits of every demo barcode (a GS1 Germany prefix).
const EAN_PREFIX: &str = "400";
/// Products per category before the small per-category spread (+0, +1 or +2).
const PRODUCTS_PER_CATEGORY: usize = 44;
/// Share of products with a struck-through former price, in percent.
const ON_SALE_PERCENT: usize = 10;
/// Share of food certified organic in categories without an organic line, in percent.
const EXTRA_ORGANIC_PERCENT: usize = 15;

/// The generated demo catalog.
#[derive(Debug, Clone)]
pub struct DemoCatalog {
    /// The navigation categories, in position order.
    pub categories: Vec<Category>,
    /// The products, category by category.
    pub products: Vec<Product>,
    /// One quantity per SKU of `products`, in catalog order.
    pub stock: Vec<(Sku, i64)>,
}

// ---------------------------------------------------------------------------------------------
// Randomness
// ---------------------------------------------------------------------------------------------

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast and good enough for demo data.
struct SplitMix64(u64);

impl SplitMix64 {
    /// The stream number `stream` of the demo seed.
    fn stream(stream: u64) -> SplitMix64 {
        SplitMix64(SEED ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03))
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn next_u128(&mut self) -> u128 {
        (u128::from(self.next_u64()) << 64) | u128::from(self.next_u64())
    }

    /// A number in `0..n`; 0 when `n` is 0.
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// A number in `low..=high`.
    fn between(&mut self, low: i64, high: i64) -> i64 {
        low + self.below((high - low + 1).max(1) as usize) as i64
    }

    /// True `percent` times out of a hundred.
    fn percent(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    /// One of `items`; empty when there are none.
    fn pick(&mut self, items: &[&'static str]) -> &'static str {
        items
            .get(self.below(items.len()))
            .copied()
            .unwrap_or_default()
    }

    /// Fisher–Yates shuffle.
    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The word lists
// ---------------------------------------------------------------------------------------------

/// One pack size a product is sold in.
struct Pack {
    /// The variant title, e.g. `500 g`.
    title: &'static str,
    /// The SKU suffix, e.g. `500G`.
    code: &'static str,
    /// The quantity, in a unit shared by the packs of one product (grams, millilitres, pieces).
    /// Only the tests read it: they check that larger packs cost less per unit after rounding.
    #[cfg_attr(not(test), allow(dead_code))]
    units: i64,
    /// Relative price; grows like `units^0.9`, so larger packs cost less per unit.
    weight: i64,
    /// What the pack holds, for its shipping weight.
    content: Content,
}

/// The contents of a pack, for its shipping weight ([`shipping_grams`]).
#[derive(Debug, Clone, Copy)]
enum Content {
    /// Net grams; a millilitre of a drink or a liquid counts as a gram.
    Grams(u32),
    /// Items of the category's usual weight ([`Spec::item_grams`]).
    Items(u32),
}

const fn pack(
    title: &'static str,
    code: &'static str,
    units: i64,
    weight: i64,
    content: Content,
) -> Pack {
    Pack {
        title,
        code,
        units,
        weight,
        content,
    }
}

const G100: Pack = pack("100 g", "100G", 100, 631, Content::Grams(100));
const G150: Pack = pack("150 g", "150G", 150, 909, Content::Grams(150));
const G200: Pack = pack("200 g", "200G", 200, 1177, Content::Grams(200));
const G250: Pack = pack("250 g", "250G", 250, 1439, Content::Grams(250));
const G300: Pack = pack("300 g", "300G", 300, 1696, Content::Grams(300));
const G400: Pack = pack("400 g", "400G", 400, 2197, Content::Grams(400));
const G500: Pack = pack("500 g", "500G", 500, 2686, Content::Grams(500));
const KG1: Pack = pack("1 kg", "1KG", 1000, 5012, Content::Grams(1000));
const KG2: Pack = pack("2 kg", "2KG", 2000, 9352, Content::Grams(2000));
const ML50: Pack = pack("50 ml", "50ML", 50, 338, Content::Grams(50));
const ML100: Pack = pack("100 ml", "100ML", 100, 631, Content::Grams(100));
const ML200: Pack = pack("200 ml", "200ML", 200, 1177, Content::Grams(200));
const ML250: Pack = pack("250 ml", "250ML", 250, 1439, Content::Grams(250));
const ML330: Pack = pack("330 ml", "330ML", 330, 1848, Content::Grams(330));
const ML500: Pack = pack("500 ml", "500ML", 500, 2686, Content::Grams(500));
const ML750: Pack = pack("750 ml", "750ML", 750, 3869, Content::Grams(750));
const L1: Pack = pack("1 l", "1L", 1000, 5012, Content::Grams(1000));
const L15: Pack = pack("1.5 l", "1.5L", 1500, 7219, Content::Grams(1500));
const L2: Pack = pack("2 l", "2L", 2000, 9352, Content::Grams(2000));
const CANS6: Pack = pack("6 × 330 ml", "6X330ML", 1980, 9268, Content::Grams(1980));
const CANS12: Pack = pack("12 × 330 ml", "12X330ML", 3960, 17295, Content::Grams(3960));
const EACH: Pack = pack("Single", "EA", 1, 1000, Content::Items(1));
const PACK2: Pack = pack("2-pack", "2PK", 2, 1866, Content::Items(2));
const PACK3: Pack = pack("3-pack", "3PK", 3, 2688, Content::Items(3));
const PACK4: Pack = pack("4-pack", "4PK", 4, 3482, Content::Items(4));
const PACK8: Pack = pack("8-pack", "8PK", 8, 6498, Content::Items(8));
const SET2: Pack = pack("Set of 2", "SET2", 2, 1866, Content::Items(2));
const SET3: Pack = pack("Set of 3", "SET3", 3, 2688, Content::Items(3));
const SET4: Pack = pack("Set of 4", "SET4", 4, 3482, Content::Items(4));
const BAGS20: Pack = pack("20 bags", "20BAGS", 20, 14823, Content::Grams(40));
const BAGS50: Pack = pack("50 bags", "50BAGS", 50, 33812, Content::Grams(100));
const TABS30: Pack = pack("30 tablets", "30TABS", 30, 21351, Content::Grams(540));
const TABS60: Pack = pack("60 tablets", "60TABS", 60, 39842, Content::Grams(1080));
// Pans: units are the cooking surface (cm²/1), so the per-unit price still falls with size; the
// content is the pan's own weight. Tea bags weigh 2 g, dishwasher tablets 18 g.
const CM20: Pack = pack("20 cm", "20CM", 400, 1000, Content::Grams(1000));
const CM24: Pack = pack("24 cm", "24CM", 576, 1250, Content::Grams(1300));
const CM28: Pack = pack("28 cm", "28CM", 784, 1500, Content::Grams(1600));
const SMALL: Pack = pack("Small", "S", 1, 1000, Content::Items(1));
const MEDIUM: Pack = pack("Medium", "M", 2, 1700, Content::Items(2));
const LARGE: Pack = pack("Large", "L", 4, 2900, Content::Items(4));

/// The noun of a product name, with its pack sizes and the usual price of the first pack.
struct Noun {
    name: &'static str,
    packs: &'static [Pack],
    /// Usual price of the first pack, in euro cents.
    price: i64,
    /// Where it comes from; empty to pick one of the category's origins.
    origin: &'static str,
}

const fn noun(name: &'static str, packs: &'static [Pack], price: i64) -> Noun {
    Noun {
        name,
        packs,
        price,
        origin: "",
    }
}

const fn noun_from(
    name: &'static str,
    packs: &'static [Pack],
    price: i64,
    origin: &'static str,
) -> Noun {
    Noun {
        name,
        packs,
        price,
        origin,
    }
}

/// The simple pictogram drawn on a category's images.
#[derive(Debug, Clone, Copy)]
enum Icon {
    Bean,
    Cup,
    Loaf,
    MilkBottle,
    Apple,
    Jar,
    SnackBag,
    Glass,
    Spray,
    Drop,
    Pan,
    Plant,
    Basket,
}

/// Everything needed to generate one category and its products.
struct Spec {
    id: &'static str,
    name: &'static str,
    description: &'static str,
    sku_prefix: &'static str,
    colour: &'static str,
    icon: Icon,
    /// Food may be organic.
    food: bool,
    /// The tax class: food is `reduced`; drinks other than milk, and everything else, `standard`.
    vat: Vat,
    /// Shipping weight of one item of the category's `Items` packs, packaging included.
    item_grams: u32,
    /// First words of the product names, e.g. an origin, flavour or scent.
    qualifiers: &'static [&'static str],
    /// The attribute the qualifier fills (`origin`, `flavour`, `scent`, …), if any.
    qualifier_key: Option<&'static str>,
    nouns: &'static [Noun],
    brands: &'static [&'static str],
    origins: &'static [&'static str],
    /// An extra attribute with its possible values, e.g. `roast`.
    feature: Option<(&'static str, &'static [&'static str])>,
    /// Tasting notes for `{note}`.
    notes: &'static [&'static str],
    /// The first sentence of a description: `{name}`, `{brand}`, `{origin}`, `{feature}`,
    /// `{note}` and `{q}` (the qualifier in lower case) are filled in.
    template: &'static str,
    /// Second sentences, one picked per product, with the same placeholders.
    closers: &'static [&'static str],
}

/// German VAT of a category: reduced for food (coffee beans and tea leaves included), standard
/// for everything else — soft drinks, juices and water too, which German VAT does not count as
/// food.
#[derive(Debug, Clone, Copy)]
enum Vat {
    Reduced,
    Standard,
}

impl Vat {
    /// The tax class, which picks the rate of each market at checkout.
    fn class(self) -> &'static str {
        match self {
            Vat::Reduced => "reduced",
            Vat::Standard => protocol::STANDARD_TAX_CLASS,
        }
    }

    /// The home-market (German) rate in basis points, shown on the storefront.
    fn rate_bp(self) -> u32 {
        match self {
            Vat::Reduced => 700,
            Vat::Standard => 1900,
        }
    }
}

static SPECS: [Spec; 12] = [
    Spec {
        id: "coffee",
        name: "Coffee",
        description: "Single-origin beans and ground coffee, roasted in small batches.",
        sku_prefix: "COF",
        colour: "#6F4E37",
        icon: Icon::Bean,
        food: true,
        vat: Vat::Reduced,
        item_grams: 250,
        qualifiers: &[
            "Ethiopia Yirgacheffe", "Ethiopia Sidamo", "Colombia Huila", "Brazil Cerrado",
            "Guatemala Antigua", "Kenya Nyeri", "Costa Rica Tarrazu", "Peru Cajamarca",
            "Sumatra Mandheling", "Rwanda Kivu", "Honduras Marcala", "Mexico Chiapas",
        ],
        qualifier_key: Some("origin"),
        nouns: &[
            noun("Whole Beans", &[G250, G500, KG1], 749),
            noun("Ground Coffee", &[G250, KG1], 699),
            noun("Espresso Beans", &[G250, G500, KG1], 799),
            noun("Filter Roast", &[G250], 649),
        ],
        brands: &["Omnihub Market", "Bergmann Roasters", "Kaffeehaus Nord", "Copper Kettle Coffee", "Altstadt Roasting"],
        origins: &[],
        feature: Some(("roast", &["light", "medium", "medium-dark", "dark"])),
        notes: &[
            "dark chocolate and hazelnut", "blueberry and jasmine", "caramel and red apple",
            "citrus and honey", "brown sugar and almond", "cocoa and cherry", "toffee and orange peel",
        ],
        template: "A single-origin coffee from {origin}, given a {feature} roast by {brand} to bring out notes of {note}.",
        closers: &[
            "Roasted in small batches and packed within a day of roasting.",
            "Made for espresso, moka pot and pour-over alike.",
            "The one-way valve bag keeps the aroma in; store it cool and dry once opened.",
        ],
    },
    Spec {
        id: "tea",
        name: "Tea",
        description: "Black, green and herbal teas, loose or in compostable bags.",
        sku_prefix: "TEA",
        colour: "#5E7D32",
        icon: Icon::Cup,
        food: true,
        vat: Vat::Reduced,
        item_grams: 100,
        qualifiers: &["Organic", "Classic", "Premium"],
        qualifier_key: None,
        nouns: &[
            noun_from("Sencha Green Tea", &[G100, G250], 549, "Japan"),
            noun_from("Earl Grey", &[BAGS20, BAGS50], 299, "Sri Lanka"),
            noun_from("English Breakfast", &[BAGS20, BAGS50], 279, "India"),
            noun_from("Darjeeling", &[G100, G250], 649, "India"),
            noun_from("Assam", &[BAGS20, BAGS50], 299, "India"),
            noun_from("Jasmine Green Tea", &[G100, G250], 599, "China"),
            noun_from("Chamomile Infusion", &[BAGS20, BAGS50], 249, "Egypt"),
            noun_from("Peppermint Infusion", &[BAGS20, BAGS50], 249, "Germany"),
            noun_from("Rooibos", &[BAGS20, BAGS50], 279, "South Africa"),
            noun_from("Oolong", &[G100, G250], 749, "Taiwan"),
            noun_from("Gunpowder Green Tea", &[G100, G250], 499, "China"),
            noun_from("Lapsang Souchong", &[G100, G250], 699, "China"),
            noun_from("Chai Spice Blend", &[G100, G250], 549, "India"),
            noun_from("Lemon Ginger Infusion", &[BAGS20], 269, "Germany"),
            noun_from("Hibiscus Berry Infusion", &[BAGS20], 269, "Egypt"),
            noun_from("White Peony Tea", &[G100], 899, "China"),
        ],
        brands: &["Omnihub Market", "Teahouse Hansen", "Leaf & Cup", "Green Valley Teas"],
        origins: &[],
        feature: None,
        notes: &[],
        template: "{brand} blends {name} from the finest harvests of {origin}.",
        closers: &[
            "Packed in plastic-free, compostable bags or a resealable pouch.",
            "Lovely on its own, iced, or with a dash of milk or lemon.",
            "Freshly packed in our Hamburg tea room.",
        ],
    },
    Spec {
        id: "bakery",
        name: "Bakery",
        description: "Fresh bread, rolls and crackers from craft bakeries near you.",
        sku_prefix: "BAK",
        colour: "#B5651D",
        icon: Icon::Loaf,
        food: true,
        vat: Vat::Reduced,
        item_grams: 300,
        qualifiers: &["Sourdough", "Rye", "Spelt", "Wholegrain", "Seeded", "Oat"],
        qualifier_key: None,
        nouns: &[
            noun("Country Loaf", &[EACH, PACK2], 399),
            noun("Sandwich Loaf", &[EACH, PACK2], 289),
            noun("Baguette", &[EACH, PACK2], 189),
            noun("Rolls", &[PACK4, PACK8], 199),
            noun("Bagels", &[PACK4, PACK8], 249),
            noun("Crispbread", &[G200], 229),
            noun("Tin Loaf", &[EACH], 329),
            noun("Flatbread", &[PACK4, PACK8], 229),
            noun("Crackers", &[G200], 249),
        ],
        brands: &["Omnihub Market Bakery", "Backstube Kramer", "Mill & Oven", "Roggen Brothers"],
        origins: &["Hamburg", "Berlin", "Munich", "Cologne", "Leipzig"],
        feature: Some(("bake", &["golden", "deep brown", "crisp"])),
        notes: &[],
        template: "{brand} bakes {name} in {origin} after a slow overnight fermentation, to a {feature} finish.",
        closers: &[
            "Best enjoyed with salted butter or a good cheese.",
            "Made without preservatives or added sugar.",
            "Keeps well in a bread bag and toasts beautifully.",
        ],
    },
    Spec {
        id: "dairy",
        name: "Dairy",
        description: "Milk, yogurt, butter and cheese from pasture-fed herds.",
        sku_prefix: "DAI",
        colour: "#5A6FA8",
        icon: Icon::MilkBottle,
        food: true,
        vat: Vat::Reduced,
        item_grams: 200,
        qualifiers: &["Organic", "Alpine", "Farmhouse", "Lactose-Free"],
        qualifier_key: None,
        nouns: &[
            noun("Whole Milk", &[ML500, L1], 119),
            noun("Semi-Skimmed Milk", &[ML500, L1], 109),
            noun("Greek Yogurt", &[G150, G500], 119),
            noun("Natural Yogurt", &[G150, G500], 79),
            noun("Butter", &[G250], 279),
            noun("Cream Cheese", &[G200, G400], 189),
            noun("Mozzarella", &[G200], 149),
            noun("Aged Gouda", &[G200, G400], 349),
            noun("Emmental", &[G200, G400], 299),
            noun("Quark", &[G250, G500], 129),
            noun("Kefir", &[ML500, L1], 149),
            noun("Double Cream", &[ML200], 159),
        ],
        brands: &["Omnihub Market", "Alpenhof", "Meadow Farm", "Weidegold"],
        origins: &["Bavaria", "Allgäu", "Schleswig-Holstein", "Lower Saxony", "Tyrol", "Friesland"],
        feature: Some(("taste", &["fresh and creamy", "rich and full", "mild and clean"])),
        notes: &[],
        template: "{name} from {brand}, made with milk from family farms in {origin}; it tastes {feature}.",
        closers: &[
            "Keep refrigerated and enjoy within three days of opening.",
            "From pasture-fed cows, with nothing artificial added.",
            "Perfect for breakfast, baking and cooking.",
        ],
    },
    Spec {
        id: "fruit-vegetables",
        name: "Fruit & Vegetables",
        description: "Seasonal fruit and vegetables, picked ripe and delivered within days.",
        sku_prefix: "FRU",
        colour: "#3F8F3A",
        icon: Icon::Apple,
        food: true,
        vat: Vat::Reduced,
        item_grams: 300,
        qualifiers: &["Organic", "Fresh"],
        qualifier_key: None,
        nouns: &[
            noun_from("Braeburn Apples", &[G500, KG1], 199, "Italy"),
            noun_from("Conference Pears", &[G500, KG1], 229, "Netherlands"),
            noun_from("Bananas", &[KG1], 169, "Colombia"),
            noun_from("Vine Tomatoes", &[G500, KG1], 199, "Spain"),
            noun_from("Cherry Tomatoes", &[G250], 199, "Spain"),
            noun_from("Carrots", &[KG1, KG2], 129, "Germany"),
            noun_from("Potatoes", &[KG1, KG2], 179, "Germany"),
            noun_from("Baby Spinach", &[G250], 199, "Italy"),
            noun_from("Avocados", &[EACH, PACK4], 99, "Peru"),
            noun_from("Lemons", &[G500, KG1], 199, "Spain"),
            noun_from("Strawberries", &[G250, G500], 299, "Spain"),
            noun_from("Blueberries", &[G250], 349, "Morocco"),
            noun_from("Red Onions", &[KG1, KG2], 149, "Netherlands"),
            noun_from("Cucumbers", &[EACH], 69, "Netherlands"),
            noun_from("Broccoli", &[EACH], 129, "Germany"),
            noun_from("Red Peppers", &[EACH, PACK4], 79, "Spain"),
            noun_from("Courgettes", &[G500, KG1], 149, "Spain"),
            noun_from("Garlic", &[EACH, PACK4], 49, "Spain"),
            noun_from("Chestnut Mushrooms", &[G250], 169, "Netherlands"),
            noun_from("Clementines", &[KG1, KG2], 249, "Spain"),
            noun_from("Mangoes", &[EACH], 149, "Peru"),
            noun_from("Pineapple", &[EACH], 249, "Costa Rica"),
            noun_from("Cauliflower", &[EACH], 199, "France"),
            noun_from("Seedless Grapes", &[G500, KG1], 249, "Italy"),
        ],
        brands: &["Omnihub Market", "Sunfield Growers", "Huerta Verde", "Orchard Lane"],
        origins: &[],
        feature: None,
        notes: &[],
        template: "{name} from {origin}, picked at peak ripeness and packed by {brand}.",
        closers: &[
            "Store in a cool place and wash before eating.",
            "On our shelves within days of harvest.",
            "Class I quality, sorted by hand.",
        ],
    },
    Spec {
        id: "pantry",
        name: "Pantry",
        description: "Pasta, rice, oils, pulses and spreads for a well-stocked cupboard.",
        sku_prefix: "PAN",
        colour: "#A67C00",
        icon: Icon::Jar,
        food: true,
        vat: Vat::Reduced,
        item_grams: 250,
        qualifiers: &["Organic", "Classic", "Premium"],
        qualifier_key: None,
        nouns: &[
            noun_from("Spaghetti", &[G500, KG1], 129, "Italy"),
            noun_from("Penne", &[G500, KG1], 129, "Italy"),
            noun_from("Basmati Rice", &[G500, KG1], 249, "India"),
            noun_from("Risotto Rice", &[G500], 299, "Italy"),
            noun_from("Extra Virgin Olive Oil", &[ML500, L1], 799, "Greece"),
            noun_from("Chopped Tomatoes", &[G400], 99, "Italy"),
            noun_from("Chickpeas", &[G400], 109, "Spain"),
            noun_from("Red Lentils", &[G500], 199, "Canada"),
            noun_from("Rolled Oats", &[G500, KG1], 149, "Germany"),
            noun_from("Wildflower Honey", &[G250, G500], 549, "Germany"),
            noun_from("Strawberry Jam", &[G250], 299, "Germany"),
            noun_from("Peanut Butter", &[G250, G500], 299, "Netherlands"),
            noun_from("Sea Salt", &[G250], 199, "France"),
            noun_from("Black Peppercorns", &[G100], 299, "India"),
            noun_from("Plain Flour", &[KG1], 99, "Germany"),
            noun_from("Cane Sugar", &[G500, KG1], 199, "Brazil"),
        ],
        brands: &["Omnihub Market", "Casa Mia", "Pantry Partners", "Golden Grain"],
        origins: &[],
        feature: None,
        notes: &[],
        template: "{brand} {name}, produced in {origin}: a store-cupboard staple for quick, honest cooking.",
        closers: &[
            "Store in a cool, dry place and reseal after opening.",
            "Free from artificial colours and preservatives.",
            "Always worth keeping a spare in the cupboard.",
        ],
    },
    Spec {
        id: "snacks",
        name: "Snacks",
        description: "Crisps, chips, popcorn and pretzels for sharing, or not.",
        sku_prefix: "SNA",
        colour: "#C0392B",
        icon: Icon::SnackBag,
        food: true,
        vat: Vat::Reduced,
        item_grams: 150,
        qualifiers: &[
            "Sea Salt", "Smoked Paprika", "Sour Cream & Chive", "Salt & Vinegar",
            "Chilli & Lime", "Rosemary", "Black Pepper", "Cheese & Onion",
        ],
        qualifier_key: Some("flavour"),
        nouns: &[
            noun("Crisps", &[G150, G300], 179),
            noun("Tortilla Chips", &[G200], 199),
            noun("Popcorn", &[G100, G250], 149),
            noun("Rice Cakes", &[G100], 129),
            noun("Pretzels", &[G150, G300], 149),
            noun("Lentil Chips", &[G100, G250], 219),
        ],
        brands: &["Omnihub Market", "Crunch Club", "Kettle Farm", "Happy Nibbles"],
        origins: &["Germany", "Belgium", "Netherlands", "United Kingdom", "Spain"],
        feature: Some(("texture", &["light and crunchy", "extra crunchy", "airy and crisp"])),
        notes: &[],
        template: "{name} by {brand}: made in {origin}, {feature} and seasoned just right.",
        closers: &[
            "Made for sharing (or not).",
            "No artificial colours or flavours.",
            "Perfect with a cold drink on a warm evening.",
        ],
    },
    Spec {
        id: "drinks",
        name: "Drinks",
        description: "Spritzers, sodas, iced teas and cordials, all alcohol-free.",
        sku_prefix: "DRI",
        colour: "#1F6FB2",
        icon: Icon::Glass,
        food: true,
        vat: Vat::Standard,
        item_grams: 400,
        qualifiers: &["Apple", "Blood Orange", "Elderflower", "Ginger", "Lemon", "Rhubarb", "Cranberry", "Passion Fruit"],
        qualifier_key: Some("flavour"),
        nouns: &[
            noun("Spritzer", &[ML330, CANS6, CANS12], 109),
            noun("Iced Tea", &[ML330, CANS6, CANS12], 119),
            noun("Sparkling Water", &[ML750, L15], 89),
            noun("Cordial", &[ML500, L1], 349),
            noun("Kombucha", &[ML330, CANS6, CANS12], 199),
            noun("Soda", &[ML330, CANS6, CANS12], 99),
        ],
        brands: &["Omnihub Market", "Quellwerk", "Fizz & Fruit", "Brightwater"],
        origins: &["Germany", "Austria", "Belgium", "Denmark"],
        feature: Some(("sweetness", &["lightly sweetened", "unsweetened", "sweetened with cane sugar"])),
        notes: &[],
        template: "{name} from {brand}, bottled in {origin}; {feature} and made with natural ingredients.",
        closers: &[
            "Best served ice-cold.",
            "Vegan and free from artificial sweeteners.",
            "Cans and bottles carry a deposit and are fully recyclable.",
        ],
    },
    Spec {
        id: "household",
        name: "Household",
        description: "Plant-based cleaning and laundry products for every room.",
        sku_prefix: "HOU",
        colour: "#7B4F9E",
        icon: Icon::Spray,
        food: false,
        vat: Vat::Standard,
        item_grams: 500,
        qualifiers: &["Lavender", "Citrus", "Eucalyptus", "Sea Breeze", "Green Tea", "Cotton Blossom"],
        qualifier_key: Some("scent"),
        nouns: &[
            noun("Laundry Liquid", &[L1, L2], 499),
            noun("Washing-Up Liquid", &[ML500, L1], 199),
            noun("All-Purpose Cleaner", &[ML500], 249),
            noun("Dishwasher Tablets", &[TABS30, TABS60], 499),
            noun("Glass Cleaner", &[ML500], 229),
            noun("Fabric Softener", &[L1, L2], 299),
            noun("Bathroom Cleaner", &[ML500], 259),
            noun("Floor Cleaner", &[L1], 279),
        ],
        brands: &["Omnihub Market", "CleanLeaf", "Haushalt Pur", "Sparkle Home"],
        origins: &["Germany", "Netherlands", "Belgium", "Austria"],
        feature: None,
        notes: &[],
        template: "{name} by {brand} is made in {origin} with plant-based cleaning agents and a fresh {q} scent.",
        closers: &[
            "The packaging is made from recycled materials.",
            "Concentrated, so a little goes a long way.",
            "Biodegradable and gentle on rivers and lakes.",
        ],
    },
    Spec {
        id: "personal-care",
        name: "Personal Care",
        description: "Gentle care for hair, skin and hands, vegan and cruelty-free.",
        sku_prefix: "PER",
        colour: "#B04A7A",
        icon: Icon::Drop,
        food: false,
        vat: Vat::Standard,
        item_grams: 100,
        qualifiers: &["Aloe Vera", "Coconut Oil", "Shea Butter", "Almond Oil", "Argan Oil", "Oat Milk"],
        qualifier_key: Some("ingredient"),
        nouns: &[
            noun("Shampoo", &[ML250, ML500], 299),
            noun("Conditioner", &[ML250, ML500], 329),
            noun("Shower Gel", &[ML250], 199),
            noun("Hand Cream", &[ML100], 349),
            noun("Body Lotion", &[ML250], 449),
            noun("Bar Soap", &[EACH, PACK3], 149),
            noun("Deodorant", &[ML50], 299),
            noun("Lip Balm", &[EACH, PACK2], 249),
        ],
        brands: &["Omnihub Market", "Pure Bloom", "Hautnah", "Softly Naturals"],
        origins: &["Germany", "France", "Switzerland", "Austria", "Denmark"],
        feature: None,
        notes: &[],
        template: "{name} by {brand}, made in {origin} and enriched with {q} for gentle everyday care.",
        closers: &[
            "Dermatologically tested and suitable for sensitive skin.",
            "Vegan, cruelty-free and free from microplastics.",
            "Packaging made from recycled materials.",
        ],
    },
    Spec {
        id: "kitchen",
        name: "Kitchen",
        description: "Pans, knives and tools that make everyday cooking a pleasure.",
        sku_prefix: "KIT",
        colour: "#4A5560",
        icon: Icon::Pan,
        food: false,
        vat: Vat::Standard,
        item_grams: 700,
        qualifiers: &["Classic", "Nordic", "Professional"],
        qualifier_key: Some("line"),
        nouns: &[
            noun("Frying Pan", &[CM20, CM24, CM28], 2499),
            noun("Saucepan", &[CM20, CM24], 3499),
            noun("Chef's Knife", &[EACH], 3999),
            noun("Bread Knife", &[EACH], 2499),
            noun("Cutting Board", &[EACH], 1999),
            noun("Mixing Bowls", &[SET3], 2999),
            noun("Whisk", &[EACH], 899),
            noun("Salad Spinner", &[EACH], 1999),
            noun("French Press", &[EACH], 2999),
            noun("Tea Towels", &[SET2, SET4], 999),
            noun("Storage Jars", &[SET2, SET4], 1499),
            noun("Baking Tray", &[EACH], 1499),
            noun("Colander", &[EACH], 1499),
            noun("Cheese Grater", &[EACH], 1299),
            noun("Pepper Mill", &[EACH], 2499),
            noun("Kitchen Scale", &[EACH], 2999),
        ],
        brands: &["Omnihub Market", "Kochwerk", "Nordic Forge", "Chef & Partner"],
        origins: &["Germany", "Denmark", "Sweden", "Italy", "France"],
        feature: Some(("warranty", &["2 years", "5 years", "10 years"])),
        notes: &[],
        template: "{name} from {brand}, designed in {origin} for everyday cooking and built to last.",
        closers: &[
            "Comes with a warranty of {feature}.",
            "Thoughtfully designed and easy to clean.",
            "A gift-worthy piece for any kitchen.",
        ],
    },
    Spec {
        id: "home-garden",
        name: "Home & Garden",
        description: "Candles, pots, cushions and garden tools in calm, natural colours.",
        sku_prefix: "HOM",
        colour: "#1F7A80",
        icon: Icon::Plant,
        food: false,
        vat: Vat::Standard,
        item_grams: 800,
        qualifiers: &["Sage", "Terracotta", "Charcoal", "Sand", "Ivory", "Ochre"],
        qualifier_key: Some("colour"),
        nouns: &[
            noun("Scented Candle", &[EACH, PACK3], 1299),
            noun("Plant Pot", &[SMALL, MEDIUM, LARGE], 999),
            noun("Watering Can", &[EACH], 1999),
            noun("Garden Gloves", &[EACH], 1299),
            noun("Bird Feeder", &[EACH], 1999),
            noun("Doormat", &[EACH], 2499),
            noun("Throw Cushion", &[EACH, SET2], 2499),
            noun("Storage Basket", &[SMALL, MEDIUM, LARGE], 1499),
        ],
        brands: &["Omnihub Market", "Greenhouse Studio", "Haus & Hof", "Terra Living"],
        origins: &["Netherlands", "Denmark", "Portugal", "Germany", "Belgium"],
        feature: None,
        notes: &[],
        template: "{name} by {brand}, designed in {origin} in a soft {q} tone that suits any room, balcony or garden.",
        closers: &[
            "Made from responsibly sourced materials.",
            "Pairs beautifully with the rest of our {q} range.",
            "Designed to last for many seasons.",
        ],
    },
];

// ---------------------------------------------------------------------------------------------
// Generation
// ---------------------------------------------------------------------------------------------

/// Generates the demo catalog: the same every run.
pub fn demo_catalog() -> DemoCatalog {
    let categories = SPECS
        .iter()
        .enumerate()
        .map(|(index, spec)| category(index, spec))
        .collect();
    let mut slugs = HashSet::new();
    let mut products = Vec::new();
    for (index, spec) in SPECS.iter().enumerate() {
        products.extend(category_products(index, spec, &mut slugs));
    }
    let stock = stock_levels(&products);
    DemoCatalog {
        categories,
        products,
        stock,
    }
}

fn category(index: usize, spec: &Spec) -> Category {
    Category {
        id: CategoryId(spec.id.to_string()),
        name: spec.name.to_string(),
        description: spec.description.to_string(),
        position: (index as u32 + 1) * 10,
    }
}

/// The product being generated: where it sits and what it is called.
struct Slot {
    spec: &'static Spec,
    /// Index of the category in [`SPECS`].
    index: usize,
    /// 1-based number of the product within its category.
    seq: usize,
    qualifier: &'static str,
    noun: &'static Noun,
    name: String,
    slug: String,
}

/// The products of one category, from its own random stream so categories do not shift each
/// other. Names whose slug is already taken (in any category) are skipped.
fn category_products(
    index: usize,
    spec: &'static Spec,
    slugs: &mut HashSet<String>,
) -> Vec<Product> {
    let mut rng = SplitMix64::stream(index as u64 + 1);
    let target = PRODUCTS_PER_CATEGORY + index % 3;
    let mut products = Vec::with_capacity(target);
    for (qualifier, noun) in name_pairs(spec, &mut rng) {
        if products.len() == target {
            break;
        }
        let name = format!("{qualifier} {}", noun.name);
        let slug = slugify(&name);
        if slug.is_empty() || !slugs.insert(slug.clone()) {
            continue;
        }
        let slot = Slot {
            spec,
            index,
            seq: products.len() + 1,
            qualifier,
            noun,
            name,
            slug,
        };
        products.push(build_product(slot, &mut rng));
    }
    products
}

/// Every qualifier–noun pair of a category, shuffled.
fn name_pairs(spec: &'static Spec, rng: &mut SplitMix64) -> Vec<(&'static str, &'static Noun)> {
    let mut pairs: Vec<_> = spec
        .qualifiers
        .iter()
        .flat_map(|q| spec.nouns.iter().map(move |n| (*q, n)))
        .collect();
    rng.shuffle(&mut pairs);
    pairs
}

/// The words a description is filled in with.
struct Words<'a> {
    name: &'a str,
    brand: &'a str,
    origin: &'a str,
    feature: &'a str,
    note: &'a str,
    qualifier: String,
}

fn build_product(slot: Slot, rng: &mut SplitMix64) -> Product {
    let spec = slot.spec;
    let brand = rng.pick(spec.brands);
    let origin = origin_of(&slot, rng);
    let feature = spec.feature.map(|(key, values)| (key, rng.pick(values)));
    let organic = is_organic(&slot, rng);
    let variants = variants(&slot, rng);
    let words = Words {
        name: &slot.name,
        brand,
        origin,
        feature: feature.map_or("", |(_, value)| value),
        note: rng.pick(spec.notes),
        qualifier: slot.qualifier.to_lowercase(),
    };
    let description = describe(spec, &words, organic, rng);
    let attributes = attributes(&slot, origin, feature, organic, &variants);
    Product {
        id: ProductId(Ulid::from_parts(ID_TIMESTAMP_MS, rng.next_u128())),
        image: format!("/images/{}.svg", slot.slug),
        slug: slot.slug,
        name: slot.name,
        brand: brand.to_string(),
        description,
        category: CategoryId(spec.id.to_string()),
        tax_rate_bp: spec.vat.rate_bp(),
        tax_class: spec.vat.class().to_string(),
        variants,
        attributes,
    }
}

/// Food named "Organic …" is organic; where the category has no organic line (no "Organic"
/// qualifier), some of its food is organic anyway.
fn is_organic(slot: &Slot, rng: &mut SplitMix64) -> bool {
    if !slot.spec.food {
        false
    } else if slot.spec.qualifiers.contains(&"Organic") {
        slot.qualifier == "Organic"
    } else {
        rng.percent(EXTRA_ORGANIC_PERCENT)
    }
}

/// The qualifier when it is the origin, else the noun's own origin, else one of the category's.
fn origin_of(slot: &Slot, rng: &mut SplitMix64) -> &'static str {
    if slot.spec.qualifier_key == Some("origin") {
        slot.qualifier
    } else if !slot.noun.origin.is_empty() {
        slot.noun.origin
    } else {
        rng.pick(slot.spec.origins)
    }
}

/// One variant per pack of the noun. Prices end in 9 (or, for a quarter of products, 5) cents;
/// about one product in ten is on sale, with a former price 15–40 % higher.
fn variants(slot: &Slot, rng: &mut SplitMix64) -> Vec<Variant> {
    let digit = if rng.percent(25) { 5 } else { 9 };
    let base = end_in(slot.noun.price * rng.between(85, 125) / 100, digit);
    let markup = rng.percent(ON_SALE_PERCENT).then(|| rng.between(115, 140));
    let first_weight = slot.noun.packs.first().map_or(1, |p| p.weight.max(1));
    slot.noun
        .packs
        .iter()
        .enumerate()
        .filter_map(|(i, pack)| {
            let price = end_in(base * pack.weight / first_weight, digit);
            let compare_at = markup.map(|m| end_in(price * m / 100, 9).max(price + 10));
            variant(slot, i, pack, price, compare_at)
        })
        .collect()
}

fn variant(
    slot: &Slot,
    i: usize,
    pack: &Pack,
    price: i64,
    compare_at: Option<i64>,
) -> Option<Variant> {
    let sku = Sku::parse(&format!(
        "{}-{:04}-{}",
        slot.spec.sku_prefix, slot.seq, pack.code
    ))
    .ok()?;
    let body = format!(
        "{EAN_PREFIX}{:02}{:04}{:03}",
        slot.index + 10,
        slot.seq,
        i + 1
    );
    Some(Variant {
        sku,
        title: pack.title.to_string(),
        price: Money::new(price, Currency::EUR),
        compare_at: compare_at.map(|minor| Money::new(minor, Currency::EUR)),
        barcode: Some(ean13(&body)),
        weight_grams: shipping_grams(pack, slot.spec),
    })
}

/// Shipping weight of one unit of a pack: its contents plus packaging (a tenth of them, at least
/// 20 g), or its items at the category's item weight, which includes their packaging.
fn shipping_grams(pack: &Pack, spec: &Spec) -> u32 {
    match pack.content {
        Content::Grams(net) => net + (net / 10).max(20),
        Content::Items(count) => count * spec.item_grams,
    }
}

/// The largest amount not above `raw` whose last digit is `digit` (at least `digit` itself).
fn end_in(raw: i64, digit: i64) -> i64 {
    let rounded = raw - raw.rem_euclid(10) + digit;
    let rounded = if rounded > raw { rounded - 10 } else { rounded };
    rounded.max(digit)
}

/// Two or three sentences: the category's template, one closer, and an organic note.
fn describe(spec: &Spec, words: &Words<'_>, organic: bool, rng: &mut SplitMix64) -> String {
    let mut text = fill(spec.template, words);
    text.push(' ');
    text.push_str(&fill(rng.pick(spec.closers), words));
    if organic {
        text.push_str(" Certified organic to EU standards.");
    }
    text
}

fn fill(template: &str, words: &Words<'_>) -> String {
    template
        .replace("{name}", words.name)
        .replace("{brand}", words.brand)
        .replace("{origin}", &place_in_text(words.origin))
        .replace("{feature}", words.feature)
        .replace("{note}", words.note)
        .replace("{q}", &words.qualifier)
}

/// A place name as it reads in a sentence: "the Netherlands", but "Spain".
fn place_in_text(place: &str) -> String {
    const WITH_ARTICLE: [&str; 3] = ["Netherlands", "United Kingdom", "United States"];
    if WITH_ARTICLE.contains(&place) {
        format!("the {place}")
    } else {
        place.to_string()
    }
}

fn attributes(
    slot: &Slot,
    origin: &str,
    feature: Option<(&str, &str)>,
    organic: bool,
    variants: &[Variant],
) -> BTreeMap<String, String> {
    let mut attributes = BTreeMap::new();
    attributes.insert("origin".to_string(), origin.to_string());
    if slot.spec.food {
        attributes.insert(
            "organic".to_string(),
            if organic { "yes" } else { "no" }.to_string(),
        );
    }
    if let Some(key) = slot.spec.qualifier_key.filter(|key| *key != "origin") {
        attributes.insert(key.to_string(), slot.qualifier.to_string());
    }
    if let Some((key, value)) = feature {
        attributes.insert(key.to_string(), value.to_string());
    }
    let sizes: Vec<&str> = variants.iter().map(|v| v.title.as_str()).collect();
    attributes.insert("sizes".to_string(), sizes.join(", "));
    attributes
}

/// A URL-safe slug: lower-case ASCII letters and digits separated by single dashes
/// (apostrophes dropped, so "Chef's Knife" becomes `chefs-knife`).
fn slugify(text: &str) -> String {
    let mut slug = String::with_capacity(text.len());
    for c in text.chars().filter(|c| *c != '\'') {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    slug.trim_end_matches('-').to_string()
}

/// The EAN-13 for 12 leading digits: the digits and their check digit.
fn ean13(body: &str) -> String {
    format!("{body}{}", ean_check_digit(body))
}

/// The GS1 check digit of `digits`: weights 3 and 1 alternating from the right.
fn ean_check_digit(digits: &str) -> u32 {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| u32::from(b.wrapping_sub(b'0')) * if i % 2 == 0 { 3 } else { 1 })
        .sum();
    (10 - sum % 10) % 10
}

/// One quantity per SKU, from its own random stream.
fn stock_levels(products: &[Product]) -> Vec<(Sku, i64)> {
    let mut rng = SplitMix64::stream(STOCK_STREAM);
    products
        .iter()
        .flat_map(|p| &p.variants)
        .map(|v| (v.sku.clone(), stock_quantity(&mut rng)))
        .collect()
}

/// About 5 % out of stock, 10 % low (1–5), the rest 20–200.
fn stock_quantity(rng: &mut SplitMix64) -> i64 {
    match rng.below(100) {
        0..=4 => 0,
        5..=14 => rng.between(1, 5),
        _ => rng.between(20, 200),
    }
}

// ---------------------------------------------------------------------------------------------
// Images
// ---------------------------------------------------------------------------------------------

const SVG_FONT: &str = "system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif";
/// Colour of categories the demo does not know.
const FALLBACK_COLOUR: &str = "#55606B";
/// Characters per line of a product name on its image, beyond which the line is clipped.
const MAX_LINE_CHARS: usize = 26;

/// An SVG placeholder image for a product (for `/images/{slug}.svg`): the product's category
/// colour, a simple shape/icon per category, and the product's name wrapped on two lines; valid
/// standalone SVG with width/height/viewBox, role="img" and a <title>. XML-escape the text.
pub fn product_image_svg(product: &Product, category_name: &str) -> String {
    let spec = spec_for(&product.category);
    let colour = spec.map_or(FALLBACK_COLOUR, |s| s.colour);
    let icon = icon_markup(spec.map_or(Icon::Basket, |s| s.icon));
    let label = xml_escape(&clip(&category_name.to_uppercase(), 32));
    let mut svg = svg_open(400, 400, &product.name);
    svg.push_str(&format!(
        concat!(
            r##"<rect width="400" height="400" fill="{colour}"/>"##,
            r##"<circle cx="200" cy="160" r="92" fill="#fff" fill-opacity=".14"/>"##,
            r##"<g transform="translate(200 160) scale(1.35)" fill="#fff">{icon}</g>"##,
            r##"<text x="200" y="44" font-family="{font}" font-size="15" letter-spacing="2" "##,
            r##"text-anchor="middle" fill="#fff" fill-opacity=".85">{label}</text>"##,
        ),
        colour = colour,
        icon = icon,
        font = SVG_FONT,
        label = label,
    ));
    svg.push_str(&name_text(&product.name));
    svg.push_str("</svg>");
    svg
}

/// An SVG tile for a category (`/images/category/{id}.svg`).
pub fn category_image_svg(category: &Category) -> String {
    let spec = spec_for(&category.id);
    let colour = spec.map_or(FALLBACK_COLOUR, |s| s.colour);
    let icon = icon_markup(spec.map_or(Icon::Basket, |s| s.icon));
    let mut svg = svg_open(480, 320, &category.name);
    svg.push_str(&format!(
        "<desc>{}</desc>",
        xml_escape(&category.description)
    ));
    svg.push_str(&format!(
        concat!(
            r##"<rect width="480" height="320" fill="{colour}"/>"##,
            r##"<circle cx="430" cy="30" r="140" fill="#fff" fill-opacity=".08"/>"##,
            r##"<circle cx="240" cy="125" r="82" fill="#fff" fill-opacity=".14"/>"##,
            r##"<g transform="translate(240 125) scale(1.2)" fill="#fff">{icon}</g>"##,
            r##"<text x="240" y="268" font-family="{font}" font-size="34" font-weight="700" "##,
            r##"text-anchor="middle" fill="#fff">{name}</text></svg>"##,
        ),
        colour = colour,
        icon = icon,
        font = SVG_FONT,
        name = xml_escape(&clip(&category.name, 24)),
    ));
    svg
}

fn spec_for(id: &CategoryId) -> Option<&'static Spec> {
    SPECS.iter().find(|spec| spec.id == id.0)
}

/// The opening `<svg>` element and its `<title>`.
fn svg_open(width: u32, height: u32, title: &str) -> String {
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img"><title>{}</title>"#,
        xml_escape(title)
    )
}

/// The product name under the icon, on one or two centred lines.
fn name_text(name: &str) -> String {
    let (first, second) = two_lines(name, MAX_LINE_CHARS);
    let longest = first.chars().count().max(second.chars().count());
    let size = match longest {
        0..=14 => 32,
        15..=18 => 28,
        19..=22 => 24,
        _ => 21,
    };
    let line =
        |y: u32, text: &str| format!(r#"<tspan x="200" y="{y}">{}</tspan>"#, xml_escape(text));
    let lines = if second.is_empty() {
        line(322, &first)
    } else {
        line(308, &first) + &line(308 + size * 6 / 5, &second)
    };
    format!(
        r##"<text font-family="{SVG_FONT}" font-size="{size}" font-weight="600" text-anchor="middle" fill="#fff">{lines}</text>"##
    )
}

/// Splits `text` at the space that best balances two lines; each is clipped to `max_chars`.
fn two_lines(text: &str, max_chars: usize) -> (String, String) {
    let words: Vec<&str> = text.split_whitespace().collect();
    let width = |words: &[&str]| words.iter().map(|w| w.chars().count() + 1).sum::<usize>();
    let split = (1..words.len()).min_by_key(|&k| width(&words[..k]).max(width(&words[k..])));
    match split {
        Some(k) => (
            clip(&words[..k].join(" "), max_chars),
            clip(&words[k..].join(" "), max_chars),
        ),
        None => (clip(&words.join(" "), max_chars), String::new()),
    }
}

/// `line` cut to `max_chars` characters, ending in an ellipsis when cut.
fn clip(line: &str, max_chars: usize) -> String {
    if line.chars().count() <= max_chars {
        return line.to_string();
    }
    let kept: String = line.chars().take(max_chars.saturating_sub(1)).collect();
    format!("{}…", kept.trim_end())
}

/// Text safe inside an XML element or attribute; control characters XML forbids are dropped.
fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// The pictogram of a category, drawn in white around (0, 0) within ±50 units.
fn icon_markup(icon: Icon) -> &'static str {
    match icon {
        Icon::Bean => concat!(
            r##"<g transform="rotate(35)"><ellipse rx="28" ry="42"/>"##,
            r##"<path d="M0 -36 C12 -12 -12 12 0 36" fill="none" stroke="#000" stroke-opacity=".25" stroke-width="6" stroke-linecap="round"/></g>"##,
        ),
        Icon::Cup => concat!(
            r##"<path d="M-38 -12 h62 v22 a31 31 0 0 1 -31 31 a31 31 0 0 1 -31 -31 z"/>"##,
            r##"<circle cx="28" cy="4" r="11" fill="none" stroke="#fff" stroke-width="6"/>"##,
            r##"<rect x="-48" y="42" width="92" height="6" rx="3"/>"##,
            r##"<path d="M-7 -20 c-10 -12 10 -18 0 -30" fill="none" stroke="#fff" stroke-width="5" stroke-linecap="round"/>"##,
        ),
        Icon::Loaf => concat!(
            r##"<path d="M-46 30 v-28 a46 34 0 0 1 92 0 v28 z"/>"##,
            r##"<path d="M-26 -14 l10 14 M-4 -20 l10 14 M18 -14 l10 14" fill="none" stroke="#000" stroke-opacity=".22" stroke-width="5" stroke-linecap="round"/>"##,
        ),
        Icon::MilkBottle => concat!(
            r##"<path d="M-12 -46 h24 v14 l14 18 v60 a6 6 0 0 1 -6 6 h-40 a6 6 0 0 1 -6 -6 v-60 l14 -18 z"/>"##,
            r##"<rect x="-26" y="4" width="52" height="22" fill="#000" fill-opacity=".15"/>"##,
        ),
        Icon::Apple => concat!(
            r##"<path d="M0 -22 C-20 -36 -46 -24 -44 4 C-42 30 -22 48 0 40 C22 48 42 30 44 4 C46 -24 20 -36 0 -22 z"/>"##,
            r##"<path d="M0 -22 C0 -34 4 -42 10 -46" fill="none" stroke="#fff" stroke-width="5" stroke-linecap="round"/>"##,
            r##"<ellipse cx="20" cy="-36" rx="12" ry="6" transform="rotate(-30 20 -36)"/>"##,
        ),
        Icon::Jar => concat!(
            r##"<rect x="-30" y="-46" width="60" height="14" rx="4"/>"##,
            r##"<rect x="-38" y="-28" width="76" height="76" rx="14"/>"##,
            r##"<rect x="-28" y="-4" width="56" height="28" rx="4" fill="#000" fill-opacity=".15"/>"##,
        ),
        Icon::SnackBag => concat!(
            r##"<path d="M-34 -44 h68 l-6 44 l6 44 h-68 l6 -44 z"/>"##,
            r##"<path d="M-32 -34 h64 M-32 34 h64" stroke="#000" stroke-opacity=".2" stroke-width="4"/>"##,
            r##"<circle r="14" fill="#000" fill-opacity=".15"/>"##,
        ),
        Icon::Glass => concat!(
            r##"<path d="M8 -24 L20 -52 h14" fill="none" stroke="#fff" stroke-width="5" stroke-linecap="round" stroke-linejoin="round"/>"##,
            r##"<path d="M-30 -28 h60 l-8 76 h-44 z"/>"##,
            r##"<path d="M-27 -2 h54 l-5 50 h-44 z" fill="#000" fill-opacity=".15"/>"##,
        ),
        Icon::Spray => concat!(
            r##"<path d="M-20 -40 h34 l14 10 h-14 v8 h-34 z"/>"##,
            r##"<rect x="-14" y="-22" width="20" height="14"/>"##,
            r##"<rect x="-28" y="-8" width="48" height="56" rx="8"/>"##,
            r##"<path d="M12 -22 l8 12" fill="none" stroke="#fff" stroke-width="5" stroke-linecap="round"/>"##,
        ),
        Icon::Drop => concat!(
            r##"<path d="M0 -48 C16 -24 34 -6 34 14 A34 34 0 0 1 -34 14 C-34 -6 -16 -24 0 -48 z"/>"##,
            r##"<path d="M-16 14 a16 16 0 0 0 12 16" fill="none" stroke="#000" stroke-opacity=".22" stroke-width="5" stroke-linecap="round"/>"##,
        ),
        Icon::Pan => concat!(
            r##"<circle cx="-12" r="34"/>"##,
            r##"<circle cx="-12" r="24" fill="#000" fill-opacity=".15"/>"##,
            r##"<rect x="18" y="-6" width="34" height="12" rx="6"/>"##,
        ),
        Icon::Plant => concat!(
            r##"<path d="M0 10 C-2 -14 -30 -22 -38 -40 C-14 -38 0 -22 0 10 z"/>"##,
            r##"<path d="M0 10 C2 -18 24 -34 36 -46 C34 -20 18 -4 0 10 z"/>"##,
            r##"<path d="M-26 10 h52 l-8 38 h-36 z"/>"##,
        ),
        Icon::Basket => concat!(
            r##"<path d="M-44 -8 h88 l-10 50 h-68 z"/>"##,
            r##"<path d="M-24 -8 L-8 -40 M24 -8 L8 -40" fill="none" stroke="#fff" stroke-width="6" stroke-linecap="round"/>"##,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units_of(product: &Product, variant: &Variant) -> i64 {
        let spec = spec_for(&product.category).expect("known category");
        let noun = spec
            .nouns
            .iter()
            .find(|n| product.name.ends_with(n.name))
            .expect("known noun");
        noun.packs
            .iter()
            .find(|p| p.title == variant.title)
            .expect("known pack")
            .units
    }

    fn all_variants(catalog: &DemoCatalog) -> impl Iterator<Item = (&Product, &Variant)> {
        catalog
            .products
            .iter()
            .flat_map(|p| p.variants.iter().map(move |v| (p, v)))
    }

    /// Every `&` starts an entity and the angle brackets pair up: escaped text cannot open a tag.
    fn looks_well_formed(svg: &str) -> bool {
        let entities = ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"];
        let ampersands_ok = svg
            .match_indices('&')
            .all(|(i, _)| entities.iter().any(|e| svg[i..].starts_with(e)));
        ampersands_ok
            && svg.matches('<').count() == svg.matches('>').count()
            && svg.starts_with("<svg ")
            && svg.ends_with("</svg>")
            && svg.matches("<svg").count() == 1
            && svg.matches("<text").count() == svg.matches("</text>").count()
            && svg.contains(r#"role="img""#)
            && svg.contains("viewBox=")
            && svg.contains("width=")
            && svg.contains("height=")
            && svg.contains("<title>")
    }

    #[test]
    fn is_the_same_every_run() {
        let (a, b) = (demo_catalog(), demo_catalog());
        assert_eq!(a.categories, b.categories);
        assert_eq!(a.products, b.products);
        assert_eq!(a.stock, b.stock);
    }

    #[test]
    fn has_enough_products_in_every_category() {
        let catalog = demo_catalog();
        assert!(catalog.categories.len() >= 12);
        assert!(
            catalog.products.len() >= 520,
            "{} products",
            catalog.products.len()
        );
        for category in &catalog.categories {
            let count = catalog
                .products
                .iter()
                .filter(|p| p.category == category.id)
                .count();
            assert!(
                (40..=50).contains(&count),
                "{}: {count} products",
                category.id
            );
            assert!(!category.name.is_empty() && category.description.ends_with('.'));
        }
        let positions: HashSet<u32> = catalog.categories.iter().map(|c| c.position).collect();
        assert_eq!(positions.len(), catalog.categories.len());
    }

    #[test]
    fn names_slugs_skus_barcodes_and_ids_are_unique() {
        let catalog = demo_catalog();
        let n = catalog.products.len();
        let names: HashSet<&str> = catalog.products.iter().map(|p| p.name.as_str()).collect();
        let slugs: HashSet<&str> = catalog.products.iter().map(|p| p.slug.as_str()).collect();
        let ids: HashSet<ProductId> = catalog.products.iter().map(|p| p.id).collect();
        assert_eq!((names.len(), slugs.len(), ids.len()), (n, n, n));
        let variants = all_variants(&catalog).count();
        let skus: HashSet<&Sku> = all_variants(&catalog).map(|(_, v)| &v.sku).collect();
        let barcodes: HashSet<&Option<String>> =
            all_variants(&catalog).map(|(_, v)| &v.barcode).collect();
        assert_eq!((skus.len(), barcodes.len()), (variants, variants));
    }

    #[test]
    fn slugs_and_images_are_url_safe() {
        for product in demo_catalog().products {
            let slug = &product.slug;
            let safe = slug
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            assert!(
                safe && !slug.starts_with('-') && !slug.ends_with('-') && !slug.contains("--"),
                "{slug}"
            );
            assert_eq!(product.image, format!("/images/{slug}.svg"));
        }
        assert_eq!(
            slugify("Professional Chef's Knife"),
            "professional-chefs-knife"
        );
        assert_eq!(slugify("Salt & Vinegar Crisps"), "salt-vinegar-crisps");
    }

    #[test]
    fn every_product_has_one_to_three_variants_with_parsable_skus() {
        for product in demo_catalog().products {
            assert!(
                (1..=3).contains(&product.variants.len()),
                "{}",
                product.name
            );
            let spec = spec_for(&product.category).expect("known category");
            for v in &product.variants {
                assert_eq!(Sku::parse(v.sku.as_str()), Ok(v.sku.clone()));
                assert!(
                    v.sku.as_str().starts_with(&format!("{}-", spec.sku_prefix)),
                    "{}",
                    v.sku
                );
            }
        }
        let first = &demo_catalog().products[0].variants[0];
        assert!(first.sku.as_str().starts_with("COF-0001-"), "{}", first.sku);
    }

    #[test]
    fn barcodes_are_ean13_with_a_valid_check_digit() {
        assert_eq!(ean13("400638133393"), "4006381333931");
        assert_eq!(ean13("590123412345"), "5901234123457");
        for (_, v) in all_variants(&demo_catalog()) {
            let code = v.barcode.as_deref().expect("every variant has a barcode");
            assert!(
                code.len() == 13
                    && code.bytes().all(|b| b.is_ascii_digit())
                    && code.starts_with(EAN_PREFIX),
                "{code}"
            );
            let weighted: u32 = code
                .bytes()
                .enumerate()
                .map(|(i, b)| u32::from(b - b'0') * if i % 2 == 0 { 1 } else { 3 })
                .sum();
            assert_eq!(weighted % 10, 0, "{code}");
        }
    }

    #[test]
    fn prices_are_positive_euros_ending_in_five_or_nine() {
        for (p, v) in all_variants(&demo_catalog()) {
            assert_eq!(v.price.currency, Currency::EUR);
            assert!(v.price.minor > 0, "{}", p.name);
            assert!(
                matches!(v.price.minor % 10, 5 | 9),
                "{} {}",
                p.name,
                v.price
            );
            assert!(v.price.minor < 20_000, "{} {}", p.name, v.price);
        }
    }

    #[test]
    fn larger_packs_cost_more_but_less_per_unit() {
        let catalog = demo_catalog();
        for product in &catalog.products {
            for pair in product.variants.windows(2) {
                let (small, large) = (&pair[0], &pair[1]);
                let (su, lu) = (units_of(product, small), units_of(product, large));
                assert!(large.price.minor > small.price.minor, "{}", product.name);
                assert!(
                    large.price.minor * su < small.price.minor * lu,
                    "{}: {} vs {}",
                    product.name,
                    small.title,
                    large.title
                );
            }
        }
    }

    #[test]
    fn about_a_tenth_are_on_sale_for_more_than_the_price() {
        let catalog = demo_catalog();
        let on_sale = catalog
            .products
            .iter()
            .filter(|p| p.variants.iter().any(|v| v.compare_at.is_some()))
            .count();
        let share = on_sale * 100 / catalog.products.len();
        assert!((5..=16).contains(&share), "{share} % on sale");
        for (p, v) in all_variants(&catalog) {
            if let Some(before) = v.compare_at {
                assert!(
                    before.minor > v.price.minor && before.currency == Currency::EUR,
                    "{}",
                    p.name
                );
            }
        }
    }

    #[test]
    fn food_has_the_reduced_tax_rate_and_the_rest_the_standard_rate() {
        for product in demo_catalog().products {
            // Soft drinks, juices and water are not food for German VAT; coffee and tea are.
            let expected = match product.category.0.as_str() {
                "drinks" | "household" | "personal-care" | "kitchen" | "home-garden" => {
                    (1900, "standard")
                }
                _ => (700, "reduced"),
            };
            let got = (product.tax_rate_bp, product.tax_class.as_str());
            assert_eq!(got, expected, "{}", product.name);
        }
    }

    #[test]
    fn every_variant_has_a_shipping_weight_growing_with_the_pack() {
        let catalog = demo_catalog();
        for product in &catalog.products {
            assert!(
                product.variants.iter().all(|v| v.weight_grams > 0),
                "{}",
                product.name
            );
            for pair in product.variants.windows(2) {
                assert!(
                    pair[0].weight_grams < pair[1].weight_grams,
                    "{}: {} vs {}",
                    product.name,
                    pair[0].title,
                    pair[1].title
                );
            }
        }
        let weight_of = |title: &str| {
            all_variants(&catalog)
                .find(|(_, v)| v.title == title)
                .map(|(_, v)| v.weight_grams)
        };
        assert_eq!(weight_of("500 g"), Some(550), "500 g plus packaging");
        assert_eq!(weight_of("20 bags"), Some(60));
    }

    #[test]
    fn descriptions_and_attributes_are_filled_in() {
        for product in demo_catalog().products {
            let d = &product.description;
            let sentences = d.matches(". ").count() + 1;
            assert!((2..=3).contains(&sentences) && d.ends_with('.'), "{d}");
            assert!(
                !d.contains('{') && !d.contains('}') && !d.contains("  "),
                "{d}"
            );
            assert!(!product.brand.is_empty());
            let attribute = |key: &str| {
                product
                    .attributes
                    .get(key)
                    .map(String::as_str)
                    .unwrap_or_default()
            };
            assert!(
                !attribute("origin").is_empty() && !attribute("sizes").is_empty(),
                "{}",
                product.name
            );
            if spec_for(&product.category).is_some_and(|s| s.food) {
                assert!(
                    matches!(attribute("organic"), "yes" | "no"),
                    "{}",
                    product.name
                );
            }
            assert!(
                !d.contains(" in Netherlands") && !d.contains(" in United"),
                "{d}"
            );
            if product.name.starts_with("Organic ") {
                assert_eq!(attribute("organic"), "yes");
                assert!(d.ends_with("Certified organic to EU standards."));
            } else if spec_for(&product.category).is_some_and(|s| s.qualifiers.contains(&"Organic"))
            {
                assert_eq!(attribute("organic"), "no", "{}", product.name);
            }
        }
    }

    #[test]
    fn stock_covers_every_sku_with_some_out_and_some_low() {
        let catalog = demo_catalog();
        let skus: Vec<&Sku> = all_variants(&catalog).map(|(_, v)| &v.sku).collect();
        let stocked: Vec<&Sku> = catalog.stock.iter().map(|(sku, _)| sku).collect();
        assert_eq!(skus, stocked);
        let n = catalog.stock.len();
        let share =
            |f: fn(i64) -> bool| catalog.stock.iter().filter(|(_, q)| f(*q)).count() * 100 / n;
        let (out, low) = (share(|q| q == 0), share(|q| (1..=5).contains(&q)));
        assert!((2..=9).contains(&out), "{out} % out of stock");
        assert!((5..=16).contains(&low), "{low} % low");
        assert!(catalog
            .stock
            .iter()
            .all(|(_, q)| *q == 0 || (1..=5).contains(q) || (20..=200).contains(q)));
    }

    #[test]
    fn product_svg_escapes_the_name() {
        let catalog = demo_catalog();
        let mut product = catalog.products[0].clone();
        product.name = "Salt & <Pepper>".to_string();
        let svg = product_image_svg(&product, "Herbs & \"Spices\"");
        assert!(looks_well_formed(&svg), "{svg}");
        assert!(
            svg.contains("<title>Salt &amp; &lt;Pepper&gt;</title>"),
            "{svg}"
        );
        assert!(!svg.contains("<Pepper>") && !svg.contains("& "));
        assert!(svg.contains("HERBS &amp; &quot;SPICES&quot;"), "{svg}");
        assert!(svg.contains("#6F4E37"), "the coffee colour");
    }

    #[test]
    fn every_product_and_category_image_is_well_formed() {
        let catalog = demo_catalog();
        for product in &catalog.products {
            let category = catalog
                .categories
                .iter()
                .find(|c| c.id == product.category)
                .expect("category");
            let svg = product_image_svg(product, &category.name);
            assert!(looks_well_formed(&svg), "{svg}");
        }
        for category in &catalog.categories {
            let svg = category_image_svg(category);
            assert!(looks_well_formed(&svg), "{svg}");
            assert!(svg.contains(r#"width="480""#));
        }
        let fruit = catalog
            .categories
            .iter()
            .find(|c| c.id.0 == "fruit-vegetables")
            .expect("fruit");
        assert!(category_image_svg(fruit).contains("<title>Fruit &amp; Vegetables</title>"));
    }

    #[test]
    fn unknown_categories_get_a_neutral_image() {
        let category = Category {
            id: CategoryId("misc".into()),
            name: "Odds <& Ends>".into(),
            description: String::new(),
            position: 0,
        };
        let svg = category_image_svg(&category);
        assert!(
            looks_well_formed(&svg) && svg.contains(FALLBACK_COLOUR),
            "{svg}"
        );
    }

    #[test]
    fn names_wrap_on_two_balanced_lines() {
        let cases = [
            (
                "Ethiopia Yirgacheffe Whole Beans",
                ("Ethiopia Yirgacheffe", "Whole Beans"),
            ),
            (
                "Sour Cream & Chive Tortilla Chips",
                ("Sour Cream & Chive", "Tortilla Chips"),
            ),
            ("Bananas", ("Bananas", "")),
            ("", ("", "")),
        ];
        for (name, (first, second)) in cases {
            assert_eq!(
                two_lines(name, MAX_LINE_CHARS),
                (first.to_string(), second.to_string()),
                "{name}"
            );
        }
        let (first, second) = two_lines(&"Supercalifragilistic ".repeat(6), 26);
        assert!(
            first.chars().count() <= 26 && second.chars().count() <= 26 && second.ends_with('…')
        );
    }

    #[test]
    fn end_in_rounds_down_to_the_wanted_last_digit() {
        let cases = [
            (1234, 9, 1229),
            (1239, 9, 1239),
            (1235, 5, 1235),
            (1240, 5, 1235),
            (7, 9, 9),
            (3, 5, 5),
        ];
        for (raw, digit, expected) in cases {
            assert_eq!(end_in(raw, digit), expected, "{raw} {digit}");
        }
    }
}
