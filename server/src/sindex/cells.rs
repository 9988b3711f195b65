//! S2 cells for geo2dsphere indexes: the keys a GeoJSON value is kept under, and the key
//! ranges a geo query walks, with Aerospike's `geo2dsphere-within` settings (`max-cells`,
//! `min-level`, `max-level`, `level-mod`).
//!
//! A point is kept under its leaf cell (level 30); a region (circle or polygon) under the
//! cells of its covering. A query for points within a region walks the leaf ranges of the
//! region's covering cells; a query for regions containing a point looks up the point's
//! ancestor cells at every level, so what a region was indexed under is found whatever the
//! settings were when it was written. Coverings are computed for a shape that contains the
//! exact one (the bounding box of a polygon's great-circle edges, a circle's cap, each padded
//! a little), so a
//! covering never misses a value [`apogee_ops::geo::matches`] accepts; queries re-check every
//! candidate with it (Aerospike's `strict true`).
//!
//! Pure functions of a shape and the settings. It must never do unbounded work on a
//! configuration or a region: coverings are at most [`COVER_CELLS_MAX`] cells.

use apogee_engine::sindex::IndexKey;
use apogee_ops::geo::{
    arcs_cross, cross, dot, normalized, Shape, SpherePolygon, Vec3, EARTH_RADIUS_METERS,
};
use s2::cap::Cap;
use s2::cell::Cell;
use s2::cellid::{CellID, MAX_LEVEL};
use s2::cellunion::CellUnion;
use s2::latlng::LatLng;
use s2::point::Point;
use s2::rect::Rect;
use s2::rect_bounder::RectBounder;
use s2::region::{Region, RegionCoverer};
use s2::s1::{Angle, Rad};

/// Most cells one covering is denormalized to by `min-level` (beyond it the covering keeps
/// its coarser cells: a high `min-level` over a large region would otherwise mean millions).
pub const COVER_CELLS_MAX: usize = 1024;
/// Most cells `max-cells` may ask for (Aerospike's limit).
pub const MAX_CELLS_MAX: u64 = 256;
/// How much a polygon's bounding box is widened, in degrees (about a centimetre), so that a
/// point on its edge is inside the covering whatever the rounding.
const BOX_PAD_DEGREES: f64 = 1e-7;
/// How much a circle's cap is widened, in radians (about a centimetre on the Earth).
const CAP_PAD_RADIANS: f64 = 2e-9;

/// A namespace's `geo2dsphere-within` settings, with Aerospike's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GeoCover {
    pub min_level: u8,
    pub max_level: u8,
    pub max_cells: u16,
    pub level_mod: u8,
}

impl Default for GeoCover {
    fn default() -> GeoCover {
        GeoCover {
            min_level: 1,
            max_level: 20,
            max_cells: 12,
            level_mod: 1,
        }
    }
}

/// A namespace's `geo2dsphere-within` settings as they are now: read by every GeoJSON write,
/// index key and query, changed by `set-config` (one atomic word, so a reader never sees
/// half of a change).
#[derive(Debug)]
pub struct GeoLive(std::sync::atomic::AtomicU64);

impl GeoLive {
    pub fn new(cover: GeoCover) -> GeoLive {
        GeoLive(std::sync::atomic::AtomicU64::new(Self::pack(cover)))
    }

    fn pack(c: GeoCover) -> u64 {
        u64::from(c.min_level)
            | u64::from(c.max_level) << 8
            | u64::from(c.max_cells) << 16
            | u64::from(c.level_mod) << 32
    }

    fn unpack(v: u64) -> GeoCover {
        GeoCover {
            min_level: v as u8,
            max_level: (v >> 8) as u8,
            max_cells: (v >> 16) as u16,
            level_mod: (v >> 32) as u8,
        }
    }

    pub fn load(&self) -> GeoCover {
        Self::unpack(self.0.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Changes the settings with `f`, in one step against concurrent changes.
    pub fn update(&self, f: impl Fn(&mut GeoCover)) {
        use std::sync::atomic::Ordering::Relaxed;
        let _ = self.0.fetch_update(Relaxed, Relaxed, |v| {
            let mut c = Self::unpack(v);
            f(&mut c);
            Some(Self::pack(c))
        });
    }
}

impl GeoCover {
    /// The settings a GeoJSON bin write is judged by ([`GeoCover::fits`]), whatever the
    /// namespace's `geo2dsphere-within` says. Aerospike CE covers a written region with
    /// min-level 1, max-level 30, max-cells 12, level-mod 1 (its parser has no namespace at
    /// hand), so the settings change which cells index a region, never whether it is
    /// stored: probed on CE 8.1.2.0, a 6,000 km circle is stored and a 9,000 km one refused
    /// after `set-config` of max-cells 1, 4 or 12 and of min-level 10.
    pub const WRITE_CHECK: GeoCover = GeoCover {
        min_level: 1,
        max_level: 30,
        max_cells: 12,
        level_mod: 1,
    };
}

/// An index key for a cell id: ids are unsigned and ordered, keys signed, so the top bit is
/// flipped to keep the order.
pub fn key_of(cell: CellID) -> IndexKey {
    (cell.0 ^ (1 << 63)) as IndexKey
}

/// The leaf cell of a (longitude, latitude) point.
fn leaf(lon: f64, lat: f64) -> CellID {
    CellID::from(LatLng::from_degrees(lat, lon))
}

impl GeoCover {
    /// The cells covering a region (none for a point). Deterministic: the same region and
    /// settings always give the same cells.
    fn covering(&self, region: &Shape) -> Vec<CellID> {
        // min-level is applied below, bounded: the coverer subdivides every cell above it
        // whatever max-cells says.
        let mut union = self.cells_at(region, 0);
        union.normalize();
        if self.denormalized_cells(&union) <= COVER_CELLS_MAX {
            union.denormalize(u64::from(self.min_level), u64::from(self.level_mod.max(1)));
        }
        union.0
    }

    /// The cells covering a region (none for a point), at least `min_level`, as the coverer
    /// gives them.
    fn cells_at(&self, region: &Shape, min_level: u8) -> CellUnion {
        let coverer = RegionCoverer {
            min_level,
            max_level: self.max_level,
            level_mod: self.level_mod,
            max_cells: usize::from(self.max_cells),
        };
        match region {
            Shape::Point(..) => CellUnion(Vec::new()),
            Shape::Circle(lon, lat, meters) => {
                let angle = meters / EARTH_RADIUS_METERS + CAP_PAD_RADIANS;
                let center = Point::from(LatLng::from_degrees(*lat, *lon));
                let cap = Cap::from_center_angle(&center, &Angle::from(Rad(angle.min(PI))));
                coverer.covering(&cap)
            }
            Shape::Polygons(polygons) => {
                let mut union = CellUnion(Vec::new());
                for rings in polygons {
                    // The bound of the outer ring's great-circle edges (they bulge past their
                    // vertices' latitudes), padded.
                    let mut bounder = RectBounder::new();
                    for (lon, lat) in &rings[0] {
                        bounder.add_point(&Point::from(LatLng::from_degrees(*lat, *lon)));
                    }
                    let pad = LatLng::from_degrees(BOX_PAD_DEGREES, BOX_PAD_DEGREES);
                    let rect = bounder.get_bound().expanded(&pad).polar_closure();
                    let cells =
                        if rings.iter().map(Vec::len).sum::<usize>() <= EXACT_COVER_VERTICES_MAX {
                            coverer.covering(&PolygonRegion {
                                polygon: SpherePolygon::new(rings),
                                rect,
                            })
                        } else {
                            coverer.covering(&rect)
                        };
                    // Joined without normalizing (that would merge cells above min-level).
                    union.0.extend(cells.0);
                }
                union
            }
        }
    }

    /// Whether Aerospike stores a GeoJSON value as a bin under these settings: a region
    /// whose covering at `min-level` takes more than `max-cells` cells is refused (result
    /// 160; CE 8.1.2.0 refuses a 9,000 km circle and a polygon over [-90..90] x [-10..60],
    /// stores a 6,000 km circle and [-80..80] x [-10..60]).
    pub fn fits(&self, shape: &Shape) -> bool {
        match shape {
            Shape::Point(..) => true,
            // Each polygon of a MultiPolygon on its own (CE stores two 10-degree squares,
            // whose coverings together exceed max-cells).
            Shape::Polygons(polygons) if polygons.len() > 1 => polygons
                .iter()
                .all(|p| self.region_fits(&Shape::Polygons(vec![p.clone()]))),
            region => self.region_fits(region),
        }
    }

    fn region_fits(&self, shape: &Shape) -> bool {
        let coarse = self.cells_at(shape, 0);
        if self.denormalized_cells(&coarse) > COVER_CELLS_MAX {
            return false;
        }
        self.cells_at(shape, self.min_level).0.len() <= usize::from(self.max_cells)
    }

    /// How many cells `union` becomes when every cell is at least `min-level` (and its level
    /// a step of `level-mod` above it), counted without making them: past
    /// [`COVER_CELLS_MAX`], the answer is only "too many".
    fn denormalized_cells(&self, union: &CellUnion) -> usize {
        let min = u64::from(self.min_level);
        let step = u64::from(self.level_mod.max(1));
        let mut total = 0usize;
        for cell in &union.0 {
            let level = cell.level();
            let target = if level < min {
                min
            } else {
                // Rounded up to a level min + k * level-mod, at most 30.
                (min + (level - min).div_ceil(step) * step).min(MAX_LEVEL)
            };
            let doublings = 2 * (target.saturating_sub(level));
            if doublings >= 20 {
                return usize::MAX;
            }
            total += 1 << doublings;
            if total > COVER_CELLS_MAX {
                return total;
            }
        }
        total
    }

    /// The keys a GeoJSON value is kept under: a point's leaf cell, a region's covering
    /// cells.
    pub fn keys_of(&self, shape: &Shape) -> Vec<IndexKey> {
        match shape {
            Shape::Point(lon, lat) => vec![key_of(leaf(*lon, *lat))],
            region => self.covering(region).into_iter().map(key_of).collect(),
        }
    }

    /// The key ranges (inclusive, sorted, disjoint) holding every point within `region`.
    pub fn within_ranges(&self, region: &Shape) -> Vec<(IndexKey, IndexKey)> {
        let mut ranges: Vec<(IndexKey, IndexKey)> = self
            .covering(region)
            .iter()
            .map(|c| (key_of(c.range_min()), key_of(c.range_max())))
            .collect();
        merge(&mut ranges);
        ranges
    }
}

const PI: f64 = std::f64::consts::PI;

/// Polygons of up to this many vertices are covered by their own shape; larger ones by their
/// bounding box (each cell the coverer considers costs a pass over every edge).
const EXACT_COVER_VERTICES_MAX: usize = 1024;
/// How much a cell is enlarged, as a fraction of its size, before testing it against a
/// polygon: a polygon edge lying along a cell edge, or through its corner, then counts as
/// meeting the cell, so rounding never drops a cell the polygon touches.
const CELL_GROW: f64 = 0.01;

/// A polygon as the region coverer sees it: its bounding box, and which cells it meets,
/// judged on the sphere with the same tests as [`apogee_ops::geo::matches`].
#[derive(Clone)]
struct PolygonRegion {
    polygon: SpherePolygon,
    rect: Rect,
}

impl Region for PolygonRegion {
    fn cap_bound(&self) -> Cap {
        self.rect.cap_bound()
    }

    fn rect_bound(&self) -> Rect {
        self.rect.clone()
    }

    /// Never claimed: the coverer then keeps subdividing such a cell (up to max-cells and
    /// max-level), which costs covering cells, never correctness.
    fn contains_cell(&self, _: &Cell) -> bool {
        false
    }

    fn intersects_cell(&self, cell: &Cell) -> bool {
        if !self.rect.intersects(&cell.rect_bound()) {
            return false;
        }
        let c = vec3(&cell.center());
        let quad: Vec<Vec3> = cell
            .vertices()
            .iter()
            .map(|v| {
                let v = vec3(v);
                normalized([
                    v[0] + (v[0] - c[0]) * CELL_GROW,
                    v[1] + (v[1] - c[1]) * CELL_GROW,
                    v[2] + (v[2] - c[2]) * CELL_GROW,
                ])
            })
            .collect();
        if quad.iter().any(|v| self.polygon.contains(*v)) {
            return true;
        }
        let edges: Vec<(Vec3, Vec3)> = (0..4).map(|k| (quad[k], quad[(k + 1) % 4])).collect();
        // The cell's vertices run counter-clockwise: inside is left of every edge.
        let in_quad = |p: Vec3| edges.iter().all(|(a, b)| dot(cross(*a, *b), p) >= 0.0);
        self.polygon.rings.iter().any(|ring| {
            ring.iter().any(|p| in_quad(*p))
                || ring
                    .windows(2)
                    .any(|e| edges.iter().any(|(a, b)| arcs_cross(e[0], e[1], *a, *b)))
        })
    }
}

fn vec3(p: &Point) -> Vec3 {
    [p.0.x, p.0.y, p.0.z]
}

/// The keys (as one-key ranges, sorted) of every cell containing a point, at every level:
/// wherever a region holding the point was indexed, one of its cells is among them.
pub fn containing_ranges(point: &Shape) -> Vec<(IndexKey, IndexKey)> {
    let Shape::Point(lon, lat) = point else {
        return Vec::new();
    };
    let leaf = leaf(*lon, *lat);
    let mut ranges: Vec<(IndexKey, IndexKey)> = (0..=MAX_LEVEL)
        .map(|level| {
            let k = key_of(leaf.parent(level));
            (k, k)
        })
        .collect();
    merge(&mut ranges);
    ranges
}

/// Sorts ranges and joins those that overlap or touch.
fn merge(ranges: &mut Vec<(IndexKey, IndexKey)>) {
    ranges.sort_unstable();
    let mut out: Vec<(IndexKey, IndexKey)> = Vec::with_capacity(ranges.len());
    for &(lo, hi) in ranges.iter() {
        match out.last_mut() {
            Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    *ranges = out;
}

/// Whether `key` lies in one of `ranges` (sorted, disjoint).
pub fn in_ranges(ranges: &[(IndexKey, IndexKey)], key: IndexKey) -> bool {
    let i = ranges.partition_point(|(_, hi)| *hi < key);
    ranges.get(i).is_some_and(|(lo, _)| *lo <= key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use apogee_ops::geo::{matches, parse};

    #[test]
    fn settings_set_config_accepts_never_panic_and_round_trip() {
        let live = GeoLive::new(GeoCover::default());
        assert_eq!(live.load(), GeoCover::default());
        // Aerospike's set-config accepts min-level above max-level, 0..=30 each, and
        // max-cells 1..=256: every such setting must answer, never panic.
        for (min_level, max_level, max_cells) in [
            (26, 25, 12),
            (30, 0, 1),
            (0, 0, 256),
            (0, 30, 1),
            (12, 12, 256),
        ] {
            live.update(|g| {
                g.min_level = min_level;
                g.max_level = max_level;
                g.max_cells = max_cells;
            });
            let c = live.load();
            assert_eq!(
                (c.min_level, c.max_level, c.max_cells, c.level_mod),
                (min_level, max_level, max_cells, 1)
            );
            for region in [
                Shape::Circle(-122.0, 37.0, 5_000.0),
                square(10.0, 10.0, 2.0),
                Shape::Point(1.0, 2.0),
            ] {
                let fits = c.fits(&region);
                let keys = c.keys_of(&region);
                assert!(keys.len() <= COVER_CELLS_MAX, "{c:?}: {} keys", keys.len());
                if matches!(region, Shape::Point(..)) {
                    assert!(fits && keys.len() == 1);
                } else {
                    let _ = c.within_ranges(&region);
                }
            }
        }
    }

    fn square(lon: f64, lat: f64, side: f64) -> Shape {
        let (a, b) = (lon + side, lat + side);
        Shape::Polygons(vec![vec![vec![
            (lon, lat),
            (a, lat),
            (a, b),
            (lon, b),
            (lon, lat),
        ]]])
    }

    /// A small deterministic generator (no dependency for the tests).
    fn lcg(seed: &mut u64) -> f64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*seed >> 11) as f64 / (1u64 << 53) as f64
    }

    #[test]
    fn every_point_a_region_holds_is_in_its_within_ranges() {
        let cover = GeoCover::default();
        let mut seed = 7;
        // Each region with the spread (degrees) of the sample points thrown around it.
        let regions = [
            (square(-122.5, 37.0, 1.5), 2.0),
            (square(179.0, -89.9, 0.99), 2.0),
            (square(-0.001, -0.001, 0.002), 0.004),
            (Shape::Circle(-122.0, 37.5, 5_000.0), 0.2),
            (Shape::Circle(179.99, 0.0, 50_000.0), 2.0),
            (Shape::Circle(0.0, 89.99, 20_000.0), 0.5),
            (Shape::Circle(10.0, 10.0, 0.0), 1.0),
            // Within one level-20 cell (its covering's cells must still hold its points).
            (
                Shape::Polygons(vec![vec![vec![
                    (5.0, 5.0),
                    (5.00001, 5.0),
                    (5.0, 5.00001),
                    (5.0, 5.0),
                ]]]),
                0.00002,
            ),
            // A thin diagonal band, and a ring around the antimeridian.
            (
                Shape::Polygons(vec![vec![vec![
                    (-10.0, -10.0),
                    (-9.9, -10.0),
                    (10.0, 10.0),
                    (9.9, 10.0),
                    (-10.0, -10.0),
                ]]]),
                25.0,
            ),
            (
                Shape::Polygons(vec![vec![vec![
                    (179.0, -1.0),
                    (-179.0, -1.0),
                    (-179.0, 1.0),
                    (179.0, 1.0),
                    (179.0, -1.0),
                ]]]),
                3.0,
            ),
        ];
        for (region, spread) in &regions {
            let ranges = cover.within_ranges(region);
            assert!(!ranges.is_empty() && ranges.windows(2).all(|w| w[0].1 < w[1].0));
            let mut inside = 0;
            for _ in 0..4000 {
                // Points around the region's middle, some inside, some not.
                let (lon, lat) = match region {
                    Shape::Circle(lon, lat, _) => (*lon, *lat),
                    Shape::Polygons(p) => p[0][0][0],
                    Shape::Point(..) => unreachable!(),
                };
                let mut lon = lon + (lcg(&mut seed) - 0.3) * spread;
                if lon > 180.0 {
                    lon -= 360.0;
                }
                let p = Shape::Point(
                    lon.clamp(-180.0, 180.0),
                    (lat + (lcg(&mut seed) - 0.3) * spread).clamp(-90.0, 90.0),
                );
                if matches(&p, region) {
                    inside += 1;
                    let key = cover.keys_of(&p)[0];
                    assert!(in_ranges(&ranges, key), "{p:?} in {region:?} missed");
                }
            }
            // The edge itself: a polygon's corner and a point on its side.
            if let Shape::Polygons(p) = region {
                let (lon, lat) = p[0][0][0];
                let corner = Shape::Point(lon, lat);
                assert!(in_ranges(&ranges, cover.keys_of(&corner)[0]));
            }
            let radius_zero = matches!(region, Shape::Circle(_, _, r) if *r == 0.0);
            assert!(radius_zero || inside > 0, "no sample fell in {region:?}");
        }
    }

    #[test]
    fn a_region_is_found_from_any_point_it_holds() {
        for cover in [
            GeoCover::default(),
            GeoCover {
                min_level: 10,
                max_level: 12,
                max_cells: 4,
                level_mod: 2,
            },
            GeoCover {
                min_level: 30,
                max_level: 30,
                max_cells: 256,
                level_mod: 1,
            },
        ] {
            let mut seed = 11;
            for region in [
                square(-122.5, 37.0, 1.5),
                Shape::Circle(-122.0, 37.5, 2_000.0),
                Shape::Circle(3.0, -45.0, 300_000.0),
            ] {
                let keys = cover.keys_of(&region);
                assert!(!keys.is_empty() && keys.len() <= COVER_CELLS_MAX);
                for _ in 0..2000 {
                    let (lon, lat) = match &region {
                        Shape::Circle(lon, lat, _) => (*lon, *lat),
                        Shape::Polygons(p) => p[0][0][0],
                        Shape::Point(..) => unreachable!(),
                    };
                    let p = Shape::Point(
                        lon + (lcg(&mut seed) - 0.3) * 3.0,
                        lat + (lcg(&mut seed) - 0.3) * 3.0,
                    );
                    if matches(&p, &region) {
                        let ancestors = containing_ranges(&p);
                        assert!(
                            keys.iter().any(|k| in_ranges(&ancestors, *k)),
                            "{region:?} not found from {p:?} with {cover:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn regions_too_large_for_max_cells_do_not_fit_as_aerospike_says() {
        // Aerospike CE 8.1.2.0 with the default settings stored the first of each pair and
        // refused the second with 160.
        let cover = GeoCover::default();
        let polygon = |ring: &str| {
            let json = format!(r#"{{"type":"Polygon","coordinates":[{ring}]}}"#);
            apogee_ops::geo::parse(json.as_bytes()).unwrap()
        };
        let cases = [
            (
                polygon("[[-80,-10],[0,-10],[80,-10],[80,60],[0,60],[-80,60],[-80,-10]]"),
                true,
            ),
            (
                polygon("[[-90,-10],[0,-10],[90,-10],[90,60],[0,60],[-90,60],[-90,-10]]"),
                false,
            ),
            (polygon("[[-60,-40],[60,-40],[0,70],[-60,-40]]"), true),
            (polygon("[[-100,-40],[100,-40],[0,70],[-100,-40]]"), false),
            (
                polygon("[[-95,0],[0,0],[95,0],[95,1],[0,1],[-95,1],[-95,0]]"),
                true,
            ),
            (polygon("[[0,40],[90,40],[180,40],[-90,40],[0,40]]"), true),
            (Shape::Circle(10.0, 20.0, 6_000_000.0), true),
            (Shape::Circle(10.0, 20.0, 9_000_000.0), false),
            (Shape::Point(1.0, 2.0), true),
            (
                apogee_ops::geo::parse(
                    br#"{"type":"MultiPolygon","coordinates":[[[[0,0],[10,0],[10,10],[0,10],[0,0]]],
                        [[[20,0],[30,0],[30,10],[20,10],[20,0]]]]}"#,
                )
                .unwrap(),
                true,
            ),
        ];
        for (shape, fits) in &cases {
            assert_eq!(cover.fits(shape), *fits, "{shape:?}");
        }
        // A min-level that would need millions of cells never runs the coverer that far.
        let deep = GeoCover {
            min_level: 30,
            max_level: 30,
            max_cells: 256,
            level_mod: 1,
        };
        assert!(!deep.fits(&Shape::Circle(0.0, 0.0, 1_000_000.0)));
    }

    #[test]
    fn a_polygon_is_covered_by_its_shape_not_its_box() {
        let band = Shape::Polygons(vec![vec![vec![
            (-10.0, -10.0),
            (-9.9, -10.0),
            (10.0, 10.0),
            (9.9, 10.0),
            (-10.0, -10.0),
        ]]]);
        let leaves = |cells: &[CellID]| -> f64 {
            cells.iter().map(|c| 4f64.powi(30 - c.level() as i32)).sum()
        };
        let cover = GeoCover {
            max_cells: 64,
            ..GeoCover::default()
        };
        let shape = leaves(&cover.covering(&band));
        let Shape::Polygons(p) = &band else {
            unreachable!()
        };
        let mut bounder = RectBounder::new();
        for (lon, lat) in &p[0][0] {
            bounder.add_point(&Point::from(LatLng::from_degrees(*lat, *lon)));
        }
        let coverer = RegionCoverer {
            min_level: 0,
            max_level: 20,
            level_mod: 1,
            max_cells: 64,
        };
        let boxed = leaves(&coverer.covering(&bounder.get_bound()).0);
        assert!(shape * 3.0 < boxed, "shape {shape:e} leaves, box {boxed:e}");
    }

    #[test]
    fn coverings_are_bounded_and_keys_keep_the_cell_order() {
        let world = parse(
            br#"{"type":"Polygon","coordinates":[[[-180,-90],[180,-90],[180,90],[-180,90],[-180,-90]]]}"#,
        )
        .unwrap();
        let fine = GeoCover {
            min_level: 30,
            max_level: 30,
            max_cells: 256,
            level_mod: 1,
        };
        assert!(fine.keys_of(&world).len() <= COVER_CELLS_MAX);
        assert!(fine.within_ranges(&world).len() <= COVER_CELLS_MAX);
        let a = CellID(5);
        let b = CellID(u64::MAX - 3);
        assert!(key_of(a) < key_of(b));
        assert!(key_of(CellID((1 << 63) - 1)) < key_of(CellID(1 << 63)));
        let ranges = vec![(1, 3), (7, 9)];
        assert!(in_ranges(&ranges, 1) && in_ranges(&ranges, 9) && !in_ranges(&ranges, 5));
        let mut touching = vec![(5, 6), (1, 4), (2, 3)];
        merge(&mut touching);
        assert_eq!(touching, vec![(1, 6)]);
    }
}
